//! Talking to podman: finding it, giving it the store's flags, and asking
//! it which of its containers use which storage container (for `gc` and
//! `remount`; nothing is ever guessed from podman's files).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::Context;
use layerstore::gc::PodmanContainers;
use serde_json::Value;

use crate::GlobalArgs;

/// The label a podman container made by `layerstore run` carries: the
/// storage container under it.
pub const LABEL_STORAGE_CONTAINER: &str = "io.layerstore.storage-container";

/// `podman` on PATH.
pub(crate) fn find() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("podman"))
        .find(|p| p.is_file())
}

/// podman's global store flags for `args` (only those given).
pub(crate) fn store_flags(args: &GlobalArgs) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(root) = &args.root {
        out.push(format!("--root={}", root.display()));
    }
    if let Some(runroot) = &args.runroot {
        out.push(format!("--runroot={}", runroot.display()));
    }
    if let Some(driver) = &args.storage_driver {
        out.push(format!("--storage-driver={driver}"));
    }
    for opt in &args.storage_opt {
        out.push(format!("--storage-opt={opt}"));
    }
    out
}

/// Parse `podman ps -a --format json`.
pub(crate) fn parse_ps(json: &[u8]) -> anyhow::Result<PodmanContainers> {
    let list: Vec<Value> =
        serde_json::from_slice(json).context("podman ps printed no JSON list")?;
    let mut out = PodmanContainers::default();
    for c in &list {
        let id = c["Id"]
            .as_str()
            .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .with_context(|| format!("podman ps listed a container without a valid Id: {c}"))?;
        out.ids.insert(id.to_owned());
        // Only a --rootfs container (no image) runs on a storage container
        // of ours: an image's label of the same name on podman's own
        // containers names nothing.
        let rootfs = c["Image"].as_str().is_none_or(str::is_empty);
        if let (Some(storage), true) = (c["Labels"][LABEL_STORAGE_CONTAINER].as_str(), rootfs) {
            out.storage_users.insert(storage.to_owned(), id.to_owned());
        }
    }
    Ok(out)
}

/// Ask podman (with the store's flags and the caller's environment) for
/// all its containers.
pub(crate) fn containers(args: &GlobalArgs) -> anyhow::Result<PodmanContainers> {
    let podman = find().context("podman is not on PATH")?;
    // This host's podman: a remote one (CONTAINER_HOST, a connection, or
    // containers.conf remote = true) lists another machine's containers.
    let out = Command::new(&podman)
        .env_remove("CONTAINER_HOST")
        .env_remove("CONTAINER_CONNECTION")
        .arg("--remote=false")
        .args(store_flags(args))
        .args(["ps", "--all", "--format", "json"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} ps", podman.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{} ps failed ({}): {}",
            podman.display(),
            out.status,
            crate::output::printable(String::from_utf8_lossy(&out.stderr).trim())
        );
    }
    parse_ps(&out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_json_gives_ids_and_storage_users() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let c = "c".repeat(64);
        let json = format!(
            r#"[{{"Id":"{a}","Image":"","Labels":{{"{LABEL_STORAGE_CONTAINER}":"s1","x":"y"}}}},{{"Id":"{b}","Labels":null}},{{"Id":"{c}","Image":"localhost/evil:latest","Labels":{{"{LABEL_STORAGE_CONTAINER}":"s2"}}}}]"#
        );
        let view = parse_ps(json.as_bytes()).unwrap();
        assert_eq!(view.ids.len(), 3);
        assert_eq!(view.storage_users.get("s1"), Some(&a));
        assert_eq!(
            view.storage_users.get("s2"),
            None,
            "an image's label names nothing"
        );
        assert!(parse_ps(b"[]").unwrap().ids.is_empty());
        assert!(parse_ps(b"null").is_err());
        assert!(parse_ps(br#"[{"Id":"../x"}]"#).is_err());
    }
}
