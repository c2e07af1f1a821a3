use std::collections::BTreeSet;

use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction};
use serde_json::{json, Value};

use super::*;

fn host(arch: &'static str, caps: &[&str], kernel: (u32, u32)) -> Host {
    Host {
        arch,
        bounding: caps.iter().map(|c| (*c).to_owned()).collect(),
        kernel: Some(KernelVersion(kernel.0, kernel.1)),
    }
}

fn translate_json(profile: Value, host: &Host) -> crate::launch::Result<Option<LinuxSeccomp>> {
    let profile: Profile = serde_json::from_value(profile)?;
    translate(&profile, host)
}

/// The names of each kept rule, in order.
fn kept(seccomp: &LinuxSeccomp) -> Vec<Vec<String>> {
    seccomp
        .syscalls()
        .iter()
        .flatten()
        .map(|s| s.names().clone())
        .collect()
}

/// A profile whose rules all carry one condition, each naming the system
/// call after it.
fn conditional() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["with_admin"], "action": "SCMP_ACT_ALLOW",
             "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["without_admin"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["with_admin_and_chroot"], "action": "SCMP_ACT_ALLOW",
             "includes": {"caps": ["CAP_SYS_ADMIN", "CAP_SYS_CHROOT"]}},
            {"names": ["on_amd64"], "action": "SCMP_ACT_ALLOW",
             "includes": {"arches": ["amd64", "x32"]}},
            {"names": ["on_arm64"], "action": "SCMP_ACT_ALLOW",
             "includes": {"arches": ["arm64"]}},
            {"names": ["not_on_amd64"], "action": "SCMP_ACT_ALLOW",
             "excludes": {"arches": ["amd64"]}},
            {"names": ["since_5_8"], "action": "SCMP_ACT_ALLOW",
             "includes": {"minKernel": "5.8"}},
            {"names": ["before_5_8"], "action": "SCMP_ACT_ERRNO",
             "excludes": {"minKernel": "5.8"}},
            {"names": ["always"], "action": "SCMP_ACT_ALLOW", "includes": {}, "excludes": {}},
        ]
    })
}

/// Arch, bounding set, kernel, and the rules kept.
type Case<'a> = (&'a str, &'a [&'a str], (u32, u32), &'a [&'a str]);

#[test]
fn caps_arches_and_kernel_pick_the_rules() {
    let table: &[Case<'_>] = &[
        (
            "amd64",
            &["CAP_CHOWN", "CAP_SYS_CHROOT"],
            (6, 1),
            &["without_admin", "on_amd64", "since_5_8", "always"],
        ),
        (
            "amd64",
            &["CAP_SYS_ADMIN"],
            (6, 1),
            &["with_admin", "on_amd64", "since_5_8", "always"],
        ),
        (
            "amd64",
            &["CAP_SYS_ADMIN", "CAP_SYS_CHROOT"],
            (5, 8),
            &[
                "with_admin",
                "with_admin_and_chroot",
                "on_amd64",
                "since_5_8",
                "always",
            ],
        ),
        (
            "arm64",
            &[],
            (5, 4),
            &[
                "without_admin",
                "on_arm64",
                "not_on_amd64",
                "before_5_8",
                "always",
            ],
        ),
        // 4.19 < 5.8 although 19 > 8.
        (
            "x86",
            &[],
            (4, 19),
            &["without_admin", "not_on_amd64", "before_5_8", "always"],
        ),
    ];
    for (arch, caps, kernel, expected) in table {
        let seccomp = translate_json(conditional(), &host(arch, caps, *kernel))
            .unwrap()
            .unwrap();
        let names: Vec<String> = kept(&seccomp).concat();
        assert_eq!(names, *expected, "{arch} {caps:?} {kernel:?}");
    }
}

#[test]
fn cap_names_are_compared_exactly_as_podman_does() {
    // containers/common compares the strings: a lower-case or unprefixed
    // name in a profile never matches a capability.
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["a"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["sys_admin"]}},
            {"names": ["b"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["SYS_ADMIN"]}},
        ]
    });
    let seccomp = translate_json(profile, &host("amd64", &["CAP_SYS_ADMIN"], (6, 1)))
        .unwrap()
        .unwrap();
    assert_eq!(kept(&seccomp), [["b"]]);
}

#[test]
fn errno_by_name_or_number() {
    let profile = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "defaultErrno": "ENOSYS",
        "syscalls": [
            {"names": ["by_name"], "action": "SCMP_ACT_ERRNO", "errno": "EPERM"},
            {"names": ["by_number"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22},
            {"names": ["name_wins"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "errno": "EINVAL"},
            {"names": ["numeric_name"], "action": "SCMP_ACT_ERRNO", "errno": "13"},
            {"names": ["none"], "action": "SCMP_ACT_ERRNO"},
        ]
    });
    let seccomp = translate_json(profile, &host("amd64", &[], (6, 1)))
        .unwrap()
        .unwrap();
    assert_eq!(seccomp.default_errno_ret(), Some(38));
    let errnos: Vec<Option<u32>> = seccomp
        .syscalls()
        .iter()
        .flatten()
        .map(|s| s.errno_ret())
        .collect();
    assert_eq!(errnos, [Some(1), Some(22), Some(22), Some(13), None]);
    // Without a name the number stands; without either there is none.
    let seccomp = translate_json(
        json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1}),
        &host("amd64", &[], (6, 1)),
    )
    .unwrap()
    .unwrap();
    assert_eq!(seccomp.default_errno_ret(), Some(1));
    let seccomp = translate_json(
        json!({"defaultAction": "SCMP_ACT_ALLOW"}),
        &host("amd64", &[], (6, 1)),
    )
    .unwrap()
    .unwrap();
    assert_eq!(seccomp.default_errno_ret(), None);
}

#[test]
fn arch_map_gives_the_host_arch_and_its_sub_arches() {
    let profile = || {
        json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "archMap": [
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
                {"architecture": "SCMP_ARCH_X86_64",
                 "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_NOT_KNOWN_TO_OCI", "subArchitectures": []},
            ],
            "syscalls": []
        })
    };
    let arches = |arch| {
        translate_json(profile(), &host(arch, &[], (6, 1)))
            .unwrap()
            .unwrap()
            .architectures()
            .clone()
            .unwrap_or_default()
    };
    assert_eq!(
        arches("amd64"),
        [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    );
    assert_eq!(arches("arm64"), [Arch::ScmpArchAarch64, Arch::ScmpArchArm]);
    // containers/common maps only some native arches (not ppc64le).
    assert_eq!(arches("ppc64le"), []);
    // A plain list is taken as it is.
    let listed = translate_json(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"]}),
        &host("amd64", &[], (6, 1)),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        listed.architectures().as_deref(),
        Some(&[Arch::ScmpArchX86][..])
    );
    let mut both = profile();
    both["architectures"] = json!(["SCMP_ARCH_X86"]);
    let err = translate_json(both, &host("amd64", &[], (6, 1))).unwrap_err();
    assert!(
        crate::launch::chain(&err).contains("'architectures' and 'archMap'"),
        "{}",
        crate::launch::chain(&err)
    );
}

#[test]
fn args_and_the_rest_carry_over() {
    let profile = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "listenerPath": "/run/agent.sock",
        "listenerMetadata": "meta",
        "syscalls": [
            {"name": "personality", "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"},
                      {"index": 1, "value": 255, "valueTwo": 7, "op": "SCMP_CMP_MASKED_EQ"}],
             "comment": "ignored", "unknownField": true},
            {"names": [], "action": "SCMP_ACT_ALLOW"},
            {"names": ["x"], "action": "SCMP_ACT_ALLOW", "args": null},
        ]
    });
    let seccomp = translate_json(profile, &host("amd64", &[], (6, 1)))
        .unwrap()
        .unwrap();
    let v = serde_json::to_value(&seccomp).unwrap();
    assert_eq!(
        v,
        json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "listenerPath": "/run/agent.sock",
            "listenerMetadata": "meta",
            "syscalls": [
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                          {"index": 1, "value": 255, "valueTwo": 7, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["x"], "action": "SCMP_ACT_ALLOW"},
            ]
        })
    );
}

#[test]
fn bad_profiles_are_errors_and_empty_ones_no_filter() {
    let h = host("amd64", &[], (6, 1));
    assert!(translate_json(json!({}), &h).unwrap().is_none());
    assert!(
        translate_json(json!({"defaultAction": "", "syscalls": null}), &h)
            .unwrap()
            .is_none()
    );
    let cases = [
        (json!({"defaultAction": "SCMP_ACT_MAYBE"}), "SCMP_ACT_MAYBE"),
        (
            json!({"syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW"}]}),
            "defaultAction",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ALLOW"}]}),
            "syscalls[0]: it has both 'name' and 'names'",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO", "errno": "EWHAT"}]}),
            "unknown errno \"EWHAT\"",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW",
                                 "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]}),
            "SCMP_CMP_ABOUT",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW",
                                 "includes": {"minKernel": "five"}}]}),
            "minKernel \"five\"",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NOPE"]}),
            "SECCOMP_FILTER_FLAG_NOPE",
        ),
    ];
    for (profile, message) in cases {
        let err = translate_json(profile.clone(), &h).unwrap_err();
        assert!(
            crate::launch::chain(&err).contains(message),
            "{profile}: {}",
            crate::launch::chain(&err)
        );
    }
    // Values of rules that are dropped are not looked at (nor by podman).
    let dropped = json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_WHATEVER",
                      "includes": {"arches": ["s390x"]}}]});
    assert!(translate_json(dropped, &h).unwrap().is_some());
    // A rule needing the kernel's version when it is unknown.
    let unknown = Host { kernel: None, ..h };
    let err = translate_json(
        json!({"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW",
                             "includes": {"minKernel": "5.8"}}]}),
        &unknown,
    )
    .unwrap_err();
    assert!(
        crate::launch::chain(&err).contains("kernel's version is unknown"),
        "{}",
        crate::launch::chain(&err)
    );
}

#[test]
fn kernel_versions_parse_like_uname_releases() {
    assert_eq!(
        KernelVersion::parse("6.18.44-fc-v857"),
        Some(KernelVersion(6, 18))
    );
    assert_eq!(
        KernelVersion::parse("3.12-1-amd64"),
        Some(KernelVersion(3, 12))
    );
    assert_eq!(KernelVersion::parse("5.8"), Some(KernelVersion(5, 8)));
    assert_eq!(KernelVersion::parse("5"), None);
    assert_eq!(KernelVersion::parse("x.1"), None);
    assert!(KernelVersion(4, 19) < KernelVersion(5, 8));
}

/// What the filter does with a system call called without arguments that
/// match an argument rule: the last rule without arguments naming it, else
/// the default.
fn verdict(seccomp: &LinuxSeccomp, name: &str) -> (LinuxSeccompAction, Option<u32>) {
    seccomp
        .syscalls()
        .iter()
        .flatten()
        .filter(|s| s.args().is_none() && s.names().iter().any(|n| n == name))
        .map(|s| (s.action(), s.errno_ret()))
        .next_back()
        .unwrap_or((seccomp.default_action(), seccomp.default_errno_ret()))
}

#[test]
fn the_hosts_profile_blocks_what_podman_blocks_for_our_caps() {
    let path = std::path::Path::new("/usr/share/containers/seccomp.json");
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (Debian's golang-github-containers-common ships it; podman depends on it)",
            path.display()
        )
    });
    let profile: Profile = serde_json::from_slice(&bytes).unwrap();
    let bounding: BTreeSet<String> = crate::launch::spec::CAPABILITIES
        .iter()
        .map(|c| {
            serde_json::to_value(c)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let seccomp = translate(
        &profile,
        &Host {
            arch: "amd64",
            bounding,
            kernel: Some(KernelVersion(6, 1)),
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(seccomp.default_errno_ret(), Some(38), "ENOSYS by default");
    assert_eq!(
        seccomp.architectures().as_deref(),
        Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
    );
    let eperm = (LinuxSeccompAction::ScmpActErrno, Some(1));
    let enosys = (LinuxSeccompAction::ScmpActErrno, Some(38));
    let allow = (LinuxSeccompAction::ScmpActAllow, None);
    for (name, expected) in [
        // Not in the profile at all: the default.
        ("add_key", enosys),
        ("request_key", enosys),
        // Listed as EPERM for everyone.
        ("kexec_load", eperm),
        ("swapon", eperm),
        ("userfaultfd", eperm),
        ("vmsplice", eperm),
        // EPERM without the capability that would allow it.
        ("sethostname", eperm),
        ("setns", eperm),
        ("bpf", eperm),
        ("perf_event_open", eperm),
        ("init_module", eperm),
        ("open_by_handle_at", eperm),
        ("kcmp", eperm),
        ("settimeofday", eperm),
        ("acct", eperm),
        ("iopl", eperm),
        ("vhangup", eperm),
        // Allowed: CAP_SYS_CHROOT is ours; the rest for everyone.
        ("chroot", allow),
        ("keyctl", allow),
        ("unshare", allow),
        ("read", allow),
        ("arch_prctl", allow),
    ] {
        assert_eq!(verdict(&seccomp, name), expected, "{name}");
    }
    // Without CAP_AUDIT_WRITE, audit netlink sockets fail with EINVAL.
    let audit = seccomp
        .syscalls()
        .iter()
        .flatten()
        .find(|s| s.names() == &["socket"] && s.args().is_some())
        .expect("socket's argument rule");
    assert_eq!(audit.errno_ret(), Some(22));
    // Nothing for other architectures.
    assert_eq!(verdict(&seccomp, "s390_runtime_instr"), enosys);
}
