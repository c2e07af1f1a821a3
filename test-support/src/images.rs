//! Test images from a small text form, as conventions.md describes:
//!
//! ```text
//! d etc 0755 0:0                 directory
//! f etc/hostname 0644 0:0 box    regular file with content "box" (`\n`: a newline)
//! F bin/busybox 0755 0:0 /bin/busybox   regular file copied from the host
//! l bin/sh busybox               symlink
//! h etc/hardlink etc/hostname 0644   hard link (tar tools store the target's mode)
//! c dev/null 0666 0:0 1 3        character device
//! p run/fifo 0600 0:0            fifo
//! x etc/hostname user.note=hi    PAX xattr on the entry with that path
//! x bin/ping security.capability=hex:0100000200200000...   binary value
//! w etc/gone                     whiteout (.wh.gone)
//! o opaque                       opaque directory marker (.wh..wh..opq)
//! ```
//!
//! Built into deterministic tars (mtime 1700000000) and docker archives.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use sha2::Digest;

const MTIME: u64 = 1_700_000_000;

fn header(kind: tar::EntryType, mode: &str, owner: &str) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(u32::from_str_radix(mode, 8).expect("octal mode"));
    let (u, g) = owner.split_once(':').expect("uid:gid");
    h.set_uid(u.parse().expect("uid"));
    h.set_gid(g.parse().expect("gid"));
    h.set_mtime(MTIME);
    h.set_size(0);
    h
}

/// The text form of a busybox system: `/bin/busybox` (the host's static
/// one) with a link per applet in `applets`, the `etc` lines (`f etc/passwd
/// ...`), and `/tmp`.
pub fn busybox_system(applets: &[&str], etc: &[&str]) -> String {
    let mut spec = String::from("d bin 0755 0:0\nF bin/busybox 0755 0:0 /bin/busybox\n");
    for a in applets {
        spec.push_str(&format!("l bin/{a} busybox\n"));
    }
    spec.push_str("d etc 0755 0:0\n");
    for line in etc {
        spec.push_str(line);
        spec.push('\n');
    }
    spec.push_str("d tmp 1777 0:0\n");
    spec
}

/// Build a layer tar from the text form.
pub fn layer_tar(spec: &str) -> Vec<u8> {
    let mut xattrs: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for line in spec.lines().map(str::trim).filter(|l| l.starts_with("x ")) {
        let mut parts = line.splitn(3, ' ').skip(1);
        let path = parts.next().expect("path").to_owned();
        let (k, v) = parts.next().expect("k=v").split_once('=').expect("k=v");
        xattrs
            .entry(path)
            .or_default()
            .push((k.to_owned(), v.to_owned()));
    }
    let mut b = tar::Builder::new(Vec::new());
    for line in spec
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        let path = f[1];
        if let Some(x) = xattrs.get(path) {
            let pax: Vec<(String, Vec<u8>)> = x
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), xattr_value(v)))
                .collect();
            if f[0] != "x" {
                b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                    .expect("pax");
            }
        }
        let data: Vec<u8>;
        let mut h;
        match f[0] {
            "d" => h = header(tar::EntryType::Directory, f[2], f[3]),
            "f" | "F" => {
                h = header(tar::EntryType::Regular, f[2], f[3]);
                data = if f[0] == "F" {
                    fs::read(f[4]).expect("host file")
                } else {
                    f[4..].join(" ").replace("\\n", "\n").into_bytes()
                };
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())
                    .expect("append");
                continue;
            }
            "l" | "h" => {
                let kind = if f[0] == "l" {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                h = header(kind, f.get(3).copied().unwrap_or("0777"), "0:0");
                b.append_link(&mut h, path, f[2]).expect("link");
                continue;
            }
            "c" => {
                h = header(tar::EntryType::Char, f[2], f[3]);
                h.set_device_major(f[4].parse().expect("major"))
                    .expect("major");
                h.set_device_minor(f[5].parse().expect("minor"))
                    .expect("minor");
            }
            "p" => h = header(tar::EntryType::Fifo, f[2], f[3]),
            "w" | "o" => {
                let (dir, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
                let wh = if f[0] == "w" {
                    format!(".wh.{name}")
                } else {
                    format!("{path}/.wh..wh..opq")
                };
                let full = if f[0] == "w" && !dir.is_empty() {
                    format!("{dir}/{wh}")
                } else {
                    wh
                };
                h = header(tar::EntryType::Regular, "0644", "0:0");
                b.append_data(&mut h, full, &[][..]).expect("whiteout");
                continue;
            }
            "x" => continue,
            other => panic!("unknown fixture line kind {other:?} in {line:?}"),
        }
        b.append_data(&mut h, path, &[][..]).expect("append");
    }
    b.into_inner().expect("tar")
}

/// A fixture xattr value: `hex:...` for binary values, else the text.
fn xattr_value(v: &str) -> Vec<u8> {
    match v.strip_prefix("hex:") {
        Some(hex) => (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex xattr value"))
            .collect(),
        None => v.as_bytes().to_vec(),
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    let hex: String = sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Write a `docker save`-style archive of uncompressed `layers` (bottom
/// first) tagged `tag`; returns the image id (config digest hex).
pub fn docker_archive(out: &Path, layers: &[Vec<u8>], tag: &str) -> String {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).expect("json");
    let id = sha256(&config)[7..].to_owned();
    let mut b = tar::Builder::new(fs::File::create(out).expect("create archive"));
    let mut add = |name: &str, data: &[u8]| {
        let mut h = header(tar::EntryType::Regular, "0644", "0:0");
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).expect("member");
    };
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let name = format!("{}/layer.tar", &sha256(l)[7..]);
        add(&name, l);
        names.push(name);
        let _ = i;
    }
    add(&format!("{id}.json"), &config);
    let manifest =
        serde_json::json!([{"Config": format!("{id}.json"), "RepoTags": [tag], "Layers": names}]);
    add(
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("json"),
    );
    b.into_inner().expect("archive").flush().expect("flush");
    id
}

/// One line per entry below `root` (sorted): type, mode, owner, size,
/// content digest or link target, xattrs, and inode groups for hard links.
/// Two trees with the same listing look the same to a container.
pub fn tree_listing(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let m = fs::symlink_metadata(&p).expect("lstat");
            let rel = p
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            let ft = m.file_type();
            let what = if ft.is_symlink() {
                format!(
                    "-> {}",
                    fs::read_link(&p).expect("readlink").to_string_lossy()
                )
            } else if ft.is_file() {
                let first = inodes
                    .entry((m.dev(), m.ino()))
                    .or_insert_with(|| rel.clone())
                    .clone();
                let link = if first != rel {
                    format!(" hardlink-of {first}")
                } else {
                    String::new()
                };
                format!(
                    "{} {}{link}",
                    m.size(),
                    sha256(&fs::read(&p).expect("read"))
                )
            } else if ft.is_dir() {
                stack.push(p.clone());
                String::new()
            } else {
                format!("rdev {}", m.rdev())
            };
            let xattrs = list_xattrs(&p);
            out.push(format!(
                "{rel} {:o} {}:{} {what} [{}]",
                m.mode(),
                m.uid(),
                m.gid(),
                xattrs.join(",")
            ));
        }
    }
    out.sort();
    out
}

/// `name=value` of each xattr of `p` (not following symlinks), overlay's
/// own bookkeeping attributes left out.
pub fn list_xattrs(p: &Path) -> Vec<String> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut names[..]).unwrap_or(0);
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with("trusted.overlay.origin") || name.starts_with("trusted.overlay.impure")
        {
            continue;
        }
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(p, name.as_str(), &mut value[..]).unwrap_or(0);
        out.push(format!(
            "{name}={:?}",
            String::from_utf8_lossy(&value[..len])
        ));
    }
    out.sort();
    out
}
