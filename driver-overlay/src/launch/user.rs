//! `--user`: parsing, names from the image's /etc/passwd and /etc/group,
//! and the check that the ids are mapped in the container's namespace.

use std::fs;
use std::io;
use std::path::Path;

use super::{invalid, refuse, Context};
use layerstore::idmap::{format_id_map, IdMap};

/// `--user` as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSpec {
    /// `UID[:GID]`.
    Ids(u32, Option<u32>),
    /// `NAME[:GROUP]`, looked up in the image's /etc/passwd and /etc/group.
    Names(String, Option<String>),
}

/// `--user UID[:GID] | NAME[:GROUP]`.
pub fn parse_user(text: &str) -> super::Result<UserSpec> {
    let (user, group) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text, None),
    };
    if user.is_empty() || group == Some("") {
        refuse!("--user {text:?}: expected UID[:GID] or NAME[:GROUP]");
    }
    match (user.parse::<u32>(), group.map(str::parse::<u32>)) {
        (Ok(uid), None) => Ok(UserSpec::Ids(uid, None)),
        (Ok(uid), Some(Ok(gid))) => Ok(UserSpec::Ids(uid, Some(gid))),
        _ => Ok(UserSpec::Names(user.to_owned(), group.map(str::to_owned))),
    }
}

/// Check that `uid`/`gid` are mapped in the container's user namespace.
pub fn check_user_mapped(
    uid: u32,
    gid: u32,
    uidmap: &[IdMap],
    gidmap: &[IdMap],
) -> super::Result<()> {
    if !uidmap.is_empty() && layerstore::idmap::to_host(uid, uidmap).is_none() {
        refuse!(
            "--user: uid {uid} is outside the container's uid map {}",
            format_id_map(uidmap)
        );
    }
    if !gidmap.is_empty() && layerstore::idmap::to_host(gid, gidmap).is_none() {
        refuse!(
            "--user: gid {gid} is outside the container's gid map {}",
            format_id_map(gidmap)
        );
    }
    Ok(())
}

/// The most read of an image's /etc/passwd or /etc/group.
const ACCOUNTS_MAX: u64 = 16 << 20;

/// Names from the image's /etc/passwd and /etc/group, read without
/// following links out of the rootfs.
pub fn resolve_names(rootfs: &Path, user: &str, group: Option<&str>) -> super::Result<(u32, u32)> {
    let read = |rel: &str| -> super::Result<String> {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
        let root = rustix::fs::open(
            rootfs,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening the rootfs {}", rootfs.display()))?;
        // NONBLOCK: a FIFO there must not hang the run; it is refused.
        let fd = openat2(
            &root,
            rel,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .with_context(|| format!("opening /{rel} in the container"))?;
        let st = rustix::fs::fstat(&fd).with_context(|| format!("examining /{rel}"))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            refuse!("/{rel} in the container is not a regular file");
        }
        let mut bytes = Vec::new();
        io::Read::read_to_end(
            &mut io::Read::take(fs::File::from(fd), ACCOUNTS_MAX + 1),
            &mut bytes,
        )
        .with_context(|| format!("reading /{rel} in the container"))?;
        if bytes.len() as u64 > ACCOUNTS_MAX {
            refuse!("/{rel} in the container is larger than {ACCOUNTS_MAX} bytes");
        }
        String::from_utf8(bytes).with_context(|| format!("/{rel} in the container is not UTF-8"))
    };
    let find = |text: &str, name: &str, field: usize| -> Option<(u32, Option<u32>)> {
        text.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.first() == Some(&name) && f.len() > field)
                .then(|| Some((f[2].parse().ok()?, f.get(3).and_then(|g| g.parse().ok()))))
                .flatten()
                .filter(|_| field >= 2)
        })
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => {
            let passwd = read("etc/passwd")?;
            let (uid, gid) = find(&passwd, user, 3)
                .ok_or_else(|| invalid!("--user: no user {user:?} in the image's /etc/passwd"))?;
            (uid, gid)
        }
    };
    let gid = match group {
        None => primary.unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = read("etc/group")?;
                find(&groups, g, 2)
                    .ok_or_else(|| invalid!("--user: no group {g:?} in the image's /etc/group"))?
                    .0
            }
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_parse() {
        assert_eq!(parse_user("1000").unwrap(), UserSpec::Ids(1000, None));
        assert_eq!(parse_user("1000:5").unwrap(), UserSpec::Ids(1000, Some(5)));
        assert_eq!(
            parse_user("www-data").unwrap(),
            UserSpec::Names("www-data".into(), None)
        );
        assert!(parse_user("").is_err());
        assert!(parse_user("1:").is_err());
    }

    #[test]
    fn users_must_be_mapped() {
        let maps = layerstore::idmap::parse_id_map("0:200000:65536").unwrap();
        assert!(check_user_mapped(1000, 1000, &maps, &maps).is_ok());
        let e = check_user_mapped(70000, 0, &maps, &maps).unwrap_err();
        assert!(e.to_string().contains("uid 70000 is outside"), "{e}");
        assert!(check_user_mapped(70000, 70000, &[], &[]).is_ok());
    }

    #[test]
    fn names_come_from_the_images_files_and_odd_files_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        fs::create_dir(&etc).unwrap();
        fs::write(
            etc.join("passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:33:34::/:/bin/sh\n",
        )
        .unwrap();
        fs::write(etc.join("group"), "root:x:0:\nweb:x:34:\n").unwrap();
        assert_eq!(resolve_names(root.path(), "web", None).unwrap(), (33, 34));
        // A FIFO is refused at once (a blocking open would wait forever).
        fs::remove_file(etc.join("passwd")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            etc.join("passwd"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let e = resolve_names(root.path(), "web", None).unwrap_err();
        assert!(
            crate::launch::chain(&e).contains("not a regular file"),
            "{}",
            crate::launch::chain(&e)
        );
        // A huge sparse file is refused, not read.
        fs::remove_file(etc.join("passwd")).unwrap();
        let f = fs::File::create(etc.join("passwd")).unwrap();
        f.set_len(1 << 40).unwrap();
        let e = resolve_names(root.path(), "web", None).unwrap_err();
        assert!(
            crate::launch::chain(&e).contains("larger than"),
            "{}",
            crate::launch::chain(&e)
        );
    }
}
