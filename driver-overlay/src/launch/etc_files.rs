//! The container's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`:
//! generated into the bundle beside `config.json` and bound over the
//! image's, as podman generates them into its userdata directory.
//!
//! ```text
//! <runroot>/overlay-containers/<id>/userdata/hosts        -> /etc/hosts
//! <runroot>/overlay-containers/<id>/userdata/hostname     -> /etc/hostname
//! <runroot>/overlay-containers/<id>/userdata/resolv.conf  -> /etc/resolv.conf
//! ```
//!
//! Their content follows containers/common v0.50 (`libnetwork/etchosts`,
//! `libnetwork/resolvconf`) with podman's defaults:
//! - hosts: the host's `/etc/hosts` entries, then `127.0.0.1 localhost`,
//!   `::1 localhost` and `127.0.0.1 <hostname>`, each without the names
//!   already there;
//! - hostname: the container's hostname;
//! - resolv.conf: the host's nameservers, search domains and options. With
//!   a network namespace of its own the container cannot reach the host's
//!   loopback resolvers: those nameservers (and IPv6 ones) are left out, a
//!   lone systemd-resolved or NetworkManager stub is replaced by the real
//!   file behind it, and with none left Google's public resolvers are used.
//!
//! The files are mode 0644, owned by the container's root (as podman
//! chowns them), and written beneath the runroot without following a
//! symlink ([`write`]). Where the image lacks `/etc` or one of the files,
//! [`make_mount_points`] creates the empty mount point the runtime would
//! create, owned by the container's root: with on-disk owners (`--nocache`
//! without idmapped mounts) that root cannot write the image's `/etc`, and
//! the runtime's own attempt would fail.

use std::collections::HashSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use super::Context;
use layerstore::confined::Dir;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};
use rustix::fs::{Mode, OFlags};

/// The files, by name in the bundle and destination in the container.
pub const FILES: [(&str, &str); 3] = [
    ("hosts", "/etc/hosts"),
    ("hostname", "/etc/hostname"),
    ("resolv.conf", "/etc/resolv.conf"),
];

/// The most read of a host file.
const MAX_HOST_FILE: u64 = 1 << 20;

/// `/etc/hosts` on top of the host's (`base`).
pub fn hosts(base: &str, hostname: &str) -> String {
    let mut out = String::new();
    let mut taken: HashSet<&str> = HashSet::new();
    for line in base.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [ip, names @ ..] = fields.as_slice() {
            if names.is_empty() {
                continue;
            }
            taken.extend(names.iter().copied());
            push_entry(&mut out, ip, names);
        }
    }
    for (ip, names) in [
        ("127.0.0.1", ["localhost"]),
        ("::1", ["localhost"]),
        ("127.0.0.1", [hostname]),
    ] {
        let free: Vec<&str> = names.into_iter().filter(|n| !taken.contains(n)).collect();
        if !free.is_empty() {
            push_entry(&mut out, ip, &free);
        }
    }
    out
}

fn push_entry(out: &mut String, ip: &str, names: &[&str]) {
    out.push_str(ip);
    out.push('\t');
    out.push_str(&names.join(" "));
    out.push('\n');
}

/// `/etc/resolv.conf` from the host's (`host`); `own_netns` when the
/// container has a network namespace of its own; `read` reads the file
/// behind a local stub resolver.
pub fn resolv_conf(host: &str, own_netns: bool, read: impl Fn(&Path) -> Option<String>) -> String {
    let mut content = host.to_owned();
    if own_netns {
        let servers = nameservers(&content);
        let behind_stub = match servers.as_slice() {
            [only] if only == "127.0.0.53" => Some("/run/systemd/resolve/resolv.conf"),
            [only] if only == "127.0.0.1" => Some("/run/NetworkManager/no-stub-resolv.conf"),
            _ => None,
        };
        if let Some(real) = behind_stub.and_then(|p| read(Path::new(p))) {
            content = real;
        }
        content = content
            .lines()
            .filter(|l| !unreachable_nameserver(l))
            .map(|l| format!("{l}\n"))
            .collect();
        if nameservers(&content).is_empty() {
            content.push_str("\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        }
    }
    let mut out = String::new();
    let search = last_keyword_line(&content, "search").join(" ");
    if !search.is_empty() && search.trim() != "." {
        out.push_str(&format!("search {search}\n"));
    }
    for server in nameservers(&content) {
        out.push_str(&format!("nameserver {server}\n"));
    }
    let options = last_keyword_line(&content, "options").join(" ");
    if !options.trim().is_empty() {
        out.push_str(&format!("options {options}\n"));
    }
    out
}

/// The fields of a resolv.conf line without its comment.
fn fields(line: &str) -> Vec<&str> {
    line.split('#')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect()
}

/// The address of a `nameserver ADDRESS` line.
fn nameserver(line: &str) -> Option<&str> {
    match fields(line).as_slice() {
        ["nameserver", addr] if parse_ip(addr).is_some() => Some(addr),
        _ => None,
    }
}

/// An address, an IPv6 one possibly with a `%zone`.
fn parse_ip(addr: &str) -> Option<IpAddr> {
    addr.split('%').next()?.parse().ok()
}

fn nameservers(content: &str) -> Vec<String> {
    content
        .lines()
        .filter_map(nameserver)
        .map(str::to_owned)
        .collect()
}

/// A nameserver a container with its own network namespace cannot use:
/// the host's loopback, or IPv6 (the container has none).
fn unreachable_nameserver(line: &str) -> bool {
    match fields(line).as_slice() {
        ["nameserver", addr, ..] => match parse_ip(addr) {
            Some(IpAddr::V4(v4)) => v4.is_loopback(),
            Some(IpAddr::V6(_)) => true,
            None => false,
        },
        _ => false,
    }
}

/// The arguments of the last `keyword ...` line (as the resolver reads it).
fn last_keyword_line<'a>(content: &'a str, keyword: &str) -> Vec<&'a str> {
    content
        .lines()
        .map(fields)
        .filter(|f| f.first() == Some(&keyword))
        .map(|f| f[1..].to_vec())
        .next_back()
        .unwrap_or_default()
}

/// The three files' content for the container `spec` describes, from the
/// host's `/etc/hosts` and `/etc/resolv.conf`.
pub fn contents(spec: &Spec) -> [(&'static str, String); 3] {
    let host_file = |p: &Path| -> Option<String> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(p)
            .ok()?
            .take(MAX_HOST_FILE)
            .read_to_string(&mut text)
            .ok()?;
        Some(text)
    };
    let hostname = spec.hostname().clone().unwrap_or_default();
    let own_netns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|nss| {
            nss.iter()
                .any(|n| n.typ() == LinuxNamespaceType::Network && n.path().is_none())
        });
    let base_hosts = host_file(Path::new("/etc/hosts")).unwrap_or_default();
    let host_resolv = host_file(Path::new("/etc/resolv.conf")).unwrap_or_default();
    [
        ("hosts", hosts(&base_hosts, &hostname)),
        ("hostname", format!("{hostname}\n")),
        (
            "resolv.conf",
            resolv_conf(&host_resolv, own_netns, host_file),
        ),
    ]
}

/// The host id of the container's id 0, if `maps` map it.
fn root_of(maps: Option<&Vec<LinuxIdMapping>>) -> Option<u32> {
    maps?
        .iter()
        .find_map(|m| (m.container_id() == 0 && m.size() > 0).then_some(m.host_id()))
}

/// The container root's host uid and gid (`None`: the host's own ids).
fn container_root(spec: &Spec) -> (Option<u32>, Option<u32>) {
    let linux = spec.linux().as_ref();
    (
        root_of(linux.and_then(|l| l.uid_mappings().as_ref())),
        root_of(linux.and_then(|l| l.gid_mappings().as_ref())),
    )
}

fn chown_to(
    fd: impl std::os::fd::AsFd,
    (uid, gid): (Option<u32>, Option<u32>),
) -> std::io::Result<()> {
    if uid.is_some() || gid.is_some() {
        rustix::fs::fchown(
            fd,
            uid.map(rustix::fs::Uid::from_raw),
            gid.map(rustix::fs::Gid::from_raw),
        )?;
    }
    Ok(())
}

/// Write [`contents`] into the bundle directory `dir` (replacing what a
/// previous start left), owned by the container's root.
pub fn write(dir: &Dir, spec: &Spec) -> super::Result<()> {
    let owner = container_root(spec);
    for (name, text) in contents(spec) {
        let shown = dir.display(name);
        (|| -> super::Result<()> {
            dir.remove_file(name)?;
            let fd = dir.open_file(
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                0o644,
            )?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o644))?;
            chown_to(&fd, owner)?;
            std::fs::File::from(fd).write_all(text.as_bytes())?;
            Ok(())
        })()
        .with_context(|| format!("writing {}", shown.display()))?;
    }
    Ok(())
}

/// In the container's root filesystem `rootfs`, create `/etc` and the
/// files' mount points where they are missing, empty and owned by the
/// container's root, beneath `rootfs` without following a symlink. What
/// exists (a symlink too: the runtime resolves it inside the rootfs) is
/// left alone.
pub fn make_mount_points(rootfs: &Path, spec: &Spec) -> super::Result<()> {
    let owner = container_root(spec);
    let root = Dir::open(rootfs).with_context(|| format!("opening {}", rootfs.display()))?;
    let shown = root.display("etc");
    let made = (|| -> super::Result<Option<Dir>> {
        match root.stat("etc")? {
            Some(meta) if meta.is_dir() => Ok(Some(root.open_dir("etc")?)),
            Some(_) => Ok(None),
            None => {
                root.create_dir("etc", 0o755)?;
                let etc = root.open_dir("etc")?;
                chown_to(etc.fd(), owner)?;
                Ok(Some(etc))
            }
        }
    })()
    .with_context(|| format!("making {}", shown.display()))?;
    let Some(etc) = made else {
        return Ok(());
    };
    for (name, _) in FILES {
        let shown = etc.display(name);
        (|| -> super::Result<()> {
            if etc.stat(name)?.is_none() {
                let fd = etc.open_file(
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                    0o644,
                )?;
                chown_to(&fd, owner)?;
            }
            Ok(())
        })()
        .with_context(|| format!("making the mount point {}", shown.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_add_what_the_base_lacks() {
        let base = "127.0.0.1 localhost\n# a comment\n10.0.0.1\tdb db.example # trailing\n\
                    lonely\n\n192.0.2.9 abc\n";
        assert_eq!(
            hosts(base, "abc"),
            "127.0.0.1\tlocalhost\n10.0.0.1\tdb db.example\n192.0.2.9\tabc\n"
        );
        assert_eq!(
            hosts("", "0123456789ab"),
            "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.0.1\t0123456789ab\n"
        );
        // The host's file of the test machines.
        assert_eq!(
            hosts("127.0.0.1 localhost\n127.0.0.1 runsc\n127.0.0.1 vm\n", "h"),
            "127.0.0.1\tlocalhost\n127.0.0.1\trunsc\n127.0.0.1\tvm\n127.0.0.1\th\n"
        );
    }

    #[test]
    fn resolv_conf_keeps_what_the_container_can_reach() {
        let none = |_: &Path| None;
        let host = "# generated\nsearch a.example b.example\nnameserver 127.0.0.53\n\
                    nameserver 10.0.0.2 # office\nnameserver fe80::1%eth0\noptions edns0 trust-ad\n";
        // The host's network: all of it, comments and order aside.
        assert_eq!(
            resolv_conf(host, false, none),
            "search a.example b.example\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n\
             nameserver fe80::1%eth0\noptions edns0 trust-ad\n"
        );
        // Its own: no loopback, no IPv6.
        assert_eq!(
            resolv_conf(host, true, none),
            "search a.example b.example\nnameserver 10.0.0.2\noptions edns0 trust-ad\n"
        );
        // Nothing left: public resolvers.
        assert_eq!(
            resolv_conf("nameserver 127.0.0.1\nnameserver ::1\n", true, none),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        // A lone systemd-resolved stub: the real file behind it.
        let resolved = |p: &Path| {
            (p == Path::new("/run/systemd/resolve/resolv.conf"))
                .then(|| "nameserver 192.0.2.53\nsearch lan\n".to_owned())
        };
        assert_eq!(
            resolv_conf("nameserver 127.0.0.53\nsearch lan\n", true, resolved),
            "search lan\nnameserver 192.0.2.53\n"
        );
        assert_eq!(resolv_conf("", false, none), "");
        // "search ." means none.
        assert_eq!(
            resolv_conf("search .\nnameserver 10.0.0.2\n", true, none),
            "nameserver 10.0.0.2\n"
        );
    }

    #[test]
    fn files_go_beneath_the_bundle_owned_by_the_container_root() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        // A symlink left in the bundle is replaced, not followed.
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(outside.join("target"), tmp.path().join("hosts")).unwrap();
        let spec = oci_spec::runtime::SpecBuilder::default()
            .hostname("abc")
            .build()
            .unwrap();
        write(&dir, &spec).unwrap();
        assert!(!outside.join("target").exists());
        use std::os::unix::fs::MetadataExt;
        for (name, _) in FILES {
            let meta = std::fs::symlink_metadata(tmp.path().join(name)).unwrap();
            assert!(meta.is_file(), "{name}");
            assert_eq!(meta.mode() & 0o7777, 0o644, "{name}");
        }
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("hostname")).unwrap(),
            "abc\n"
        );
        let hosts = std::fs::read_to_string(tmp.path().join("hosts")).unwrap();
        assert!(
            hosts
                .lines()
                .any(|l| l.split_whitespace().skip(1).any(|n| n == "abc")),
            "{hosts}"
        );
    }

    #[test]
    fn missing_mount_points_are_made_and_others_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = oci_spec::runtime::SpecBuilder::default().build().unwrap();
        // No /etc at all.
        make_mount_points(tmp.path(), &spec).unwrap();
        let etc = tmp.path().join("etc");
        for (name, _) in FILES {
            let meta = std::fs::symlink_metadata(etc.join(name)).unwrap();
            assert!(meta.is_file() && meta.len() == 0, "{name}");
        }
        // A file with content and a symlink stay as they are.
        std::fs::write(etc.join("hosts"), "10.0.0.1 x\n").unwrap();
        std::fs::remove_file(etc.join("resolv.conf")).unwrap();
        std::os::unix::fs::symlink("../run/resolv.conf", etc.join("resolv.conf")).unwrap();
        make_mount_points(tmp.path(), &spec).unwrap();
        assert_eq!(
            std::fs::read_to_string(etc.join("hosts")).unwrap(),
            "10.0.0.1 x\n"
        );
        let resolv = std::fs::symlink_metadata(etc.join("resolv.conf")).unwrap();
        assert!(resolv.file_type().is_symlink());
        assert!(!tmp.path().join("run").exists());
        // /etc a symlink: not followed, nothing made.
        let other = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&etc, other.path().join("etc")).unwrap();
        std::fs::remove_file(etc.join("hostname")).unwrap();
        make_mount_points(other.path(), &spec).unwrap();
        assert!(!etc.join("hostname").exists());
    }
}
