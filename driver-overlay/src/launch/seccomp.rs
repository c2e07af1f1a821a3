//! The seccomp filter of a `layerstore run` container: a containers-common
//! seccomp profile (podman's default is `/usr/share/containers/seccomp.json`),
//! translated into the OCI config's `linux.seccomp` the way podman 4.3.1
//! (containers/common v0.50, `pkg/seccomp`) translates it.
//!
//! ```text
//! profile                                   linux.seccomp
//! defaultAction, defaultErrno|defaultErrnoRet  defaultAction, defaultErrnoRet
//! architectures                              architectures (as they are)
//! archMap[arch = host's]                     architectures: it + its subArchitectures
//! flags, listenerPath, listenerMetadata      the same
//! syscalls[i]  kept unless                   syscalls: {names, action, errnoRet, args}
//!   excludes.arches has the host's arch
//!   excludes.caps: one is in the bounding set
//!   excludes.minKernel <= running kernel
//!   includes.arches lacks the host's arch
//!   includes.caps: one is not in the bounding set
//!   includes.minKernel > running kernel
//! ```
//!
//! Capabilities are those of the container's *bounding* set (as podman
//! checks them, whatever the user), arches are libseccomp's names for the
//! architecture this binary runs as (`amd64` on x86_64). `minKernel`
//! ("5.8": kernel and major revision) is the profile format's field that
//! Docker's profiles use; containers/common v0.50 does not know it and keeps
//! such a rule unconditionally, so a profile using it gets the same filter
//! from both on kernels at or above it (the host's profile has none). An
//! errno is a number or a name (`"EPERM"`); a name wins over the number.
//! Values are checked only in rules that are kept, as runc would see them.
//!
//! [`translate`] is a pure function of the profile and [`Host`]; reading the
//! profile and the host is [`super::confinement`]'s.

use std::collections::BTreeSet;

use super::{invalid, refuse, Context};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscallBuilder,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// A containers-common seccomp profile, as its JSON reads (unknown fields
/// ignored, missing or null ones empty: as Go decodes it).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    #[serde(default)]
    default_action: Option<String>,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    default_errno: Option<String>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMapEntry>>,
    #[serde(default)]
    syscalls: Option<Vec<Rule>>,
    #[serde(default)]
    flags: Option<Vec<String>>,
    #[serde(default)]
    listener_path: Option<String>,
    #[serde(default)]
    listener_metadata: Option<String>,
}

/// One `archMap` entry: an architecture and the ones that go with it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMapEntry {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

/// One `syscalls` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Option<Vec<String>>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    args: Option<Vec<Arg>>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    errno: Option<String>,
}

/// A rule's argument condition.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    #[serde(default)]
    index: usize,
    #[serde(default)]
    value: u64,
    #[serde(default)]
    value_two: u64,
    #[serde(default)]
    op: Option<String>,
}

/// `includes` / `excludes`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// A kernel version as `minKernel` compares it: version and major revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion(pub u32, pub u32);

impl KernelVersion {
    /// `"6.18.44-foo"` -> 6.18 (what follows the major revision is ignored).
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let (kernel, rest) = release.trim().split_once('.')?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        Some(KernelVersion(
            kernel.parse().ok()?,
            rest[..digits].parse().ok()?,
        ))
    }
}

/// What the rules' conditions are measured against.
#[derive(Debug, Clone)]
pub struct Host {
    /// libseccomp's name of this binary's architecture ([`native_arch`]).
    pub arch: &'static str,
    /// The container's bounding set, as OCI names them (`CAP_CHOWN`).
    pub bounding: BTreeSet<String>,
    /// The running kernel (`None`: unknown; a rule with `minKernel` is then
    /// an error).
    pub kernel: Option<KernelVersion>,
}

/// libseccomp's name of the architecture this binary runs as (what podman's
/// `libseccomp.GetNativeArch()` returns, and what `arches` lists).
pub fn native_arch() -> &'static str {
    let little = cfg!(target_endian = "little");
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "powerpc64" if little => "ppc64le",
        "powerpc64" => "ppc64",
        "powerpc" => "ppc",
        "mips64" if little => "mipsel64",
        "mips64" => "mips64",
        "mips" if little => "mipsel",
        "mips" => "mips",
        other => other,
    }
}

/// The `archMap` architecture containers/common v0.50 picks for a native
/// arch (none for the others: then only `architectures` counts).
fn arch_map_key(native: &str) -> Option<&'static str> {
    Some(match native {
        "amd64" => "SCMP_ARCH_X86_64",
        "arm64" => "SCMP_ARCH_AARCH64",
        "mips64" => "SCMP_ARCH_MIPS64",
        "mips64n32" => "SCMP_ARCH_MIPS64N32",
        "mipsel64" => "SCMP_ARCH_MIPSEL64",
        "mipsel64n32" => "SCMP_ARCH_MIPSEL64N32",
        "s390x" => "SCMP_ARCH_S390X",
        _ => return None,
    })
}

/// The profile's filter for a container on `host`; `None` when the
/// profile has neither a default action nor rules (podman then runs the
/// container without a filter).
pub fn translate(profile: &Profile, host: &Host) -> super::Result<Option<LinuxSeccomp>> {
    let rules = profile.syscalls.as_deref().unwrap_or_default();
    let default_action = profile.default_action.as_deref().unwrap_or_default();
    if default_action.is_empty() && rules.is_empty() {
        return Ok(None);
    }
    let default_action: LinuxSeccompAction =
        oci_value("defaultAction", default_action).context("defaultAction")?;
    let listed = profile.architectures.as_deref().unwrap_or_default();
    let map = profile.arch_map.as_deref().unwrap_or_default();
    if !listed.is_empty() && !map.is_empty() {
        refuse!("it has both 'architectures' and 'archMap'; use one of them");
    }
    let mut arches: Vec<&str> = listed.iter().map(String::as_str).collect();
    if let Some(key) = arch_map_key(host.arch) {
        if let Some(entry) = map.iter().find(|e| e.architecture.as_deref() == Some(key)) {
            arches.push(key);
            arches.extend(entry.sub_architectures.iter().flatten().map(String::as_str));
        }
    }
    let architectures = arches
        .iter()
        .map(|a| oci_value::<Arch>("architecture", a))
        .collect::<super::Result<Vec<_>>>()?;
    let flags = profile
        .flags
        .iter()
        .flatten()
        .map(|f| oci_value::<LinuxSeccompFilterFlag>("flag", f))
        .collect::<super::Result<Vec<_>>>()?;
    let mut syscalls = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if !applies(rule, host).with_context(|| format!("syscalls[{i}]"))? {
            continue;
        }
        if let Some(call) = syscall(rule).with_context(|| format!("syscalls[{i}]"))? {
            syscalls.push(call);
        }
    }
    let mut seccomp = LinuxSeccompBuilder::default()
        .default_action(default_action)
        .syscalls(syscalls);
    if let Some(errno) = errno(profile.default_errno.as_deref(), profile.default_errno_ret)
        .context("defaultErrno")?
    {
        seccomp = seccomp.default_errno_ret(errno);
    }
    if !architectures.is_empty() {
        seccomp = seccomp.architectures(architectures);
    }
    if !flags.is_empty() {
        seccomp = seccomp.flags(flags);
    }
    if let Some(p) = profile.listener_path.as_deref().filter(|p| !p.is_empty()) {
        seccomp = seccomp.listener_path(p);
    }
    if let Some(m) = profile
        .listener_metadata
        .as_deref()
        .filter(|m| !m.is_empty())
    {
        seccomp = seccomp.listener_metadata(m);
    }
    Ok(Some(seccomp.build()?))
}

/// Whether a rule's `excludes` and `includes` keep it on `host`.
fn applies(rule: &Rule, host: &Host) -> super::Result<bool> {
    let none = Filter::default();
    let (excludes, includes) = (
        rule.excludes.as_ref().unwrap_or(&none),
        rule.includes.as_ref().unwrap_or(&none),
    );
    let has_arch = |f: &Filter| f.arches.iter().flatten().any(|a| a == host.arch);
    let has_cap = |c: &String| host.bounding.contains(c);
    if has_arch(excludes) || excludes.caps.iter().flatten().any(has_cap) {
        return Ok(false);
    }
    if let Some(min) = &excludes.min_kernel {
        if at_least(host, min)? {
            return Ok(false);
        }
    }
    if includes.arches.as_ref().is_some_and(|a| !a.is_empty()) && !has_arch(includes) {
        return Ok(false);
    }
    if !includes.caps.iter().flatten().all(has_cap) {
        return Ok(false);
    }
    if let Some(min) = &includes.min_kernel {
        if !at_least(host, min)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether the running kernel is at least `min` ("5.8").
fn at_least(host: &Host, min: &str) -> super::Result<bool> {
    let min = KernelVersion::parse(min)
        .ok_or_else(|| invalid!("minKernel {min:?} is not a kernel version like \"5.8\""))?;
    let running = host.kernel.ok_or_else(|| {
        invalid!("the running kernel's version is unknown (needed for minKernel)")
    })?;
    Ok(running >= min)
}

/// A kept rule as OCI says it (`None`: it names no system call).
fn syscall(rule: &Rule) -> super::Result<Option<oci_spec::runtime::LinuxSyscall>> {
    let name = rule.name.as_deref().unwrap_or_default();
    let names = rule.names.as_deref().unwrap_or_default();
    if !name.is_empty() && !names.is_empty() {
        refuse!("it has both 'name' and 'names'; use one of them");
    }
    let names: Vec<String> = if name.is_empty() {
        names.to_vec()
    } else {
        vec![name.to_owned()]
    };
    if names.is_empty() {
        return Ok(None);
    }
    let action: LinuxSeccompAction =
        oci_value("action", rule.action.as_deref().unwrap_or_default())?;
    let mut call = LinuxSyscallBuilder::default().names(names).action(action);
    if let Some(errno) = errno(rule.errno.as_deref(), rule.errno_ret)? {
        call = call.errno_ret(errno);
    }
    let args = rule
        .args
        .iter()
        .flatten()
        .map(|a| {
            let op: LinuxSeccompOperator =
                oci_value("operator", a.op.as_deref().unwrap_or_default())?;
            let mut arg = LinuxSeccompArgBuilder::default()
                .index(a.index)
                .value(a.value)
                .op(op);
            if a.value_two != 0 {
                arg = arg.value_two(a.value_two);
            }
            Ok(arg.build()?)
        })
        .collect::<super::Result<Vec<_>>>()?;
    if !args.is_empty() {
        call = call.args(args);
    }
    Ok(Some(call.build()?))
}

/// An errno given by name or number (`name` wins when both are given).
fn errno(name: Option<&str>, number: Option<u32>) -> super::Result<Option<u32>> {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Ok(number);
    };
    if let Ok(n) = name.parse::<u32>() {
        return Ok(Some(n));
    }
    errno_by_name(name)
        .map(Some)
        .ok_or_else(|| invalid!("unknown errno {name:?}"))
}

/// The errno names a profile may use (containers/common's list), with
/// this architecture's numbers.
fn errno_by_name(name: &str) -> Option<u32> {
    use rustix::io::Errno as E;
    let table: [(&str, E); 82] = [
        ("EPERM", E::PERM),
        ("ENOENT", E::NOENT),
        ("ESRCH", E::SRCH),
        ("EIO", E::IO),
        ("ENXIO", E::NXIO),
        ("E2BIG", E::TOOBIG),
        ("ENOEXEC", E::NOEXEC),
        ("EBADF", E::BADF),
        ("ECHILD", E::CHILD),
        ("EDEADLK", E::DEADLK),
        ("ENOMEM", E::NOMEM),
        ("EACCES", E::ACCESS),
        ("EFAULT", E::FAULT),
        ("ENOTBLK", E::NOTBLK),
        ("EBUSY", E::BUSY),
        ("EEXIST", E::EXIST),
        ("EXDEV", E::XDEV),
        ("ENODEV", E::NODEV),
        ("ENOTDIR", E::NOTDIR),
        ("EISDIR", E::ISDIR),
        ("EINVAL", E::INVAL),
        ("ENFILE", E::NFILE),
        ("EMFILE", E::MFILE),
        ("ENOTTY", E::NOTTY),
        ("ETXTBSY", E::TXTBSY),
        ("EFBIG", E::FBIG),
        ("ENOSPC", E::NOSPC),
        ("ESPIPE", E::SPIPE),
        ("EROFS", E::ROFS),
        ("EMLINK", E::MLINK),
        ("EPIPE", E::PIPE),
        ("EDOM", E::DOM),
        ("ERANGE", E::RANGE),
        ("EAGAIN", E::AGAIN),
        ("EINPROGRESS", E::INPROGRESS),
        ("EALREADY", E::ALREADY),
        ("ENOTSOCK", E::NOTSOCK),
        ("EDESTADDRREQ", E::DESTADDRREQ),
        ("EMSGSIZE", E::MSGSIZE),
        ("EPROTOTYPE", E::PROTOTYPE),
        ("ENOPROTOOPT", E::NOPROTOOPT),
        ("EPROTONOSUPPORT", E::PROTONOSUPPORT),
        ("ESOCKTNOSUPPORT", E::SOCKTNOSUPPORT),
        ("EOPNOTSUPP", E::OPNOTSUPP),
        ("EPFNOSUPPORT", E::PFNOSUPPORT),
        ("EAFNOSUPPORT", E::AFNOSUPPORT),
        ("EADDRINUSE", E::ADDRINUSE),
        ("EADDRNOTAVAIL", E::ADDRNOTAVAIL),
        ("ENETDOWN", E::NETDOWN),
        ("ENETUNREACH", E::NETUNREACH),
        ("ENETRESET", E::NETRESET),
        ("ECONNABORTED", E::CONNABORTED),
        ("ECONNRESET", E::CONNRESET),
        ("ENOBUFS", E::NOBUFS),
        ("EISCONN", E::ISCONN),
        ("ENOTCONN", E::NOTCONN),
        ("ESHUTDOWN", E::SHUTDOWN),
        ("ETOOMANYREFS", E::TOOMANYREFS),
        ("ETIMEDOUT", E::TIMEDOUT),
        ("ECONNREFUSED", E::CONNREFUSED),
        ("ELOOP", E::LOOP),
        ("ENAMETOOLONG", E::NAMETOOLONG),
        ("EHOSTDOWN", E::HOSTDOWN),
        ("EHOSTUNREACH", E::HOSTUNREACH),
        ("ENOTEMPTY", E::NOTEMPTY),
        ("EUSERS", E::USERS),
        ("EDQUOT", E::DQUOT),
        ("ESTALE", E::STALE),
        ("EREMOTE", E::REMOTE),
        ("ENOLCK", E::NOLCK),
        ("ENOSYS", E::NOSYS),
        ("EILSEQ", E::ILSEQ),
        ("ENOMEDIUM", E::NOMEDIUM),
        ("EMEDIUMTYPE", E::MEDIUMTYPE),
        ("EOVERFLOW", E::OVERFLOW),
        ("ECANCELED", E::CANCELED),
        ("EIDRM", E::IDRM),
        ("ENOMSG", E::NOMSG),
        ("ENOTSUP", E::NOTSUP),
        ("EBADMSG", E::BADMSG),
        ("ENOTRECOVERABLE", E::NOTRECOVERABLE),
        ("EOWNERDEAD", E::OWNERDEAD),
    ];
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, e)| e.raw_os_error() as u32)
}

/// An OCI enum from the string a profile gives (`SCMP_ACT_ERRNO`, ...).
fn oci_value<T: DeserializeOwned>(what: &str, s: &str) -> super::Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| invalid!("unknown {what} {s:?}"))
}

#[cfg(test)]
mod tests;
