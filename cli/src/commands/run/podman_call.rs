//! podman's command line for a run: the caller's flags, layerstore's
//! label, annotations, runtime shim and cidfile, and the image's config as
//! podman's flags below the caller's (see docs/run.md, "The image's config").

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use anyhow::Context;
use layerstore::Store;
use layerstore_overlay::engine::Rootfs;

use super::podman::STORE_FLAGS;
use super::podman_flags::{csv_field, RunLine};
use super::ImageRunConfig;
use crate::commands::oci_hook::{ANNOTATION_CONTAINER, ANNOTATION_GRAPHROOT, ANNOTATION_RUNROOT};

/// A memory file holding `text`, inherited by podman (no close-on-exec),
/// and the path podman opens it by.
fn memfd_with(name: &str, text: &str) -> anyhow::Result<(OwnedFd, String)> {
    let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::empty())
        .with_context(|| format!("creating the memory file {name}"))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing the memory file {name}"))?;
    let fd = OwnedFd::from(file);
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok((fd, path))
}

/// The longest line podman reads from an env or label file: its scanner
/// (Go's bufio.Scanner, 64 KiB) fails the whole file on a longer one
/// ("token too long"), a little less to be safe.
const MAX_KV_LINE: usize = 60 * 1024;

/// `KEY=VALUE` lines for podman's `--env-file`/`--label-file`, and the
/// entries a line cannot hold (a line break in them, or too long for
/// podman's reader).
fn kv_file<'a>(entries: impl Iterator<Item = (&'a str, &'a str)>) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut rest = Vec::new();
    for (k, v) in entries {
        if k.is_empty() {
            // podman refuses `=VALUE`; an image that holds one runs without it.
            tracing::warn!(
                "the image's entry {:?} has no name; left out",
                format!("={v}")
            );
            continue;
        }
        let kv = format!("{k}={v}");
        if kv.contains(['\n', '\r'])
            || kv.len() > MAX_KV_LINE
            || k.is_empty()
            || k.starts_with('#')
            || k.contains(char::is_whitespace)
        {
            rest.push(kv);
        } else {
            text.push_str(&kv);
            text.push('\n');
        }
    }
    (text, rest)
}

/// Everything podman is given, in order.
pub(super) struct PodmanCall<'a> {
    pub(super) store_flags: Vec<String>,
    pub(super) line: &'a RunLine,
    pub(super) config: &'a ImageRunConfig,
    pub(super) storage: &'a Rootfs,
    pub(super) store: &'a Store,
    pub(super) runtime: Option<PathBuf>,
    pub(super) cidfile: Option<PathBuf>,
    pub(super) env_file: Option<String>,
    pub(super) label_file: Option<String>,
    pub(super) leftovers: (Vec<String>, Vec<String>),
}

impl PodmanCall<'_> {
    pub(super) fn argv(&self) -> Vec<String> {
        let line = self.line;
        let config = self.config;
        let id = &self.storage.container.id;
        let options = self.store.options();
        let mut a = self.store_flags.clone();
        a.push("run".to_owned());
        if let Some(rt) = &self.runtime {
            a.push(format!("--runtime={}", rt.display()));
        }
        if let Some(cid) = &self.cidfile {
            a.push(format!("--cidfile={}", cid.display()));
        }
        a.push(format!(
            "--label={}={id}",
            crate::podman::LABEL_STORAGE_CONTAINER
        ));
        let annotations = [
            (ANNOTATION_CONTAINER, id.clone()),
            (
                ANNOTATION_GRAPHROOT,
                options.graph_root.display().to_string(),
            ),
            (ANNOTATION_RUNROOT, options.run_root.display().to_string()),
        ];
        for (k, v) in annotations {
            // --annotation is one of podman's comma-separated lists.
            a.push(format!("--annotation={}", csv_field(&format!("{k}={v}"))));
        }
        // The image's, below everything the caller gives.
        if let Some(f) = &self.env_file {
            a.push(format!("--env-file={}", csv_field(f)));
        }
        for kv in &self.leftovers.0 {
            a.push(format!("--env={kv}"));
        }
        if let Some(f) = &self.label_file {
            a.push(format!("--label-file={}", csv_field(f)));
        }
        for kv in &self.leftovers.1 {
            a.push(format!("--label={kv}"));
        }
        if !line.given("entrypoint") && !config.entrypoint.is_empty() {
            a.push(format!(
                "--entrypoint={}",
                serde_json::to_string(&config.entrypoint).unwrap_or_default()
            ));
        }
        if !line.given("workdir") && !config.workdir.is_empty() {
            a.push(format!("--workdir={}", config.workdir));
        }
        if !line.given("user") && !config.user.is_empty() {
            a.push(format!("--user={}", config.user));
        }
        if !line.given("stop-signal") && !config.stop_signal.is_empty() {
            a.push(format!("--stop-signal={}", config.stop_signal));
        }
        let c = &self.storage.container;
        let chosen = !line.given("uidmap") && !line.given("gidmap") && !c.uidmap.is_empty();
        if chosen {
            // --userns=auto (given, or containers.conf's): the maps
            // layerstore chose and recorded, instead of --userns.
            a.extend(c.uidmap.iter().map(|m| format!("--uidmap={m}")));
            a.extend(c.gidmap.iter().map(|m| format!("--gidmap={m}")));
            a.extend(line.podman_args(&[STORE_FLAGS, &["runtime", "userns"]].concat()));
        } else {
            a.extend(line.podman_args(&[STORE_FLAGS, &["runtime"]].concat()));
        }
        a.push("--rootfs".to_owned());
        a.push(self.storage.path.display().to_string());
        a.extend(self.command());
        a
    }

    /// The command: the caller's, else the image's Cmd (unless the caller
    /// set the entrypoint: then the image's Cmd does not apply, as in
    /// podman).
    fn command(&self) -> Vec<String> {
        if !self.line.command.is_empty() || self.line.given("entrypoint") {
            self.line.command.clone()
        } else {
            self.config.cmd.clone()
        }
    }
}

/// The image's Env and Labels as memory files for podman's `--env-file`
/// and `--label-file` (held open until podman has read them), and what a
/// line cannot hold.
pub(super) struct ImageFiles {
    pub(super) env: Option<(OwnedFd, String)>,
    pub(super) labels: Option<(OwnedFd, String)>,
    pub(super) leftovers: (Vec<String>, Vec<String>),
}

impl ImageFiles {
    pub(super) fn of(config: &ImageRunConfig) -> anyhow::Result<ImageFiles> {
        // podman sets container=podman for the containers of its images,
        // below the image's Env; with --rootfs it does not.
        let env_entries = std::iter::once(("container", "podman")).chain(
            config
                .env
                .iter()
                .map(|kv| kv.split_once('=').unwrap_or((kv, ""))),
        );
        let (env_text, env_rest) = kv_file(env_entries);
        // An image's io.layerstore.* labels would name storage containers
        // to gc and remount: left out.
        let (label_text, label_rest) = kv_file(
            config
                .labels
                .iter()
                .filter(|(k, _)| !k.starts_with("io.layerstore."))
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        Ok(ImageFiles {
            env: (!env_text.is_empty())
                .then(|| memfd_with("layerstore-image-env", &env_text))
                .transpose()?,
            labels: (!label_text.is_empty())
                .then(|| memfd_with("layerstore-image-labels", &label_text))
                .transpose()?,
            leftovers: (env_rest, label_rest),
        })
    }
}

/// The image's labels, for [`ImageRunConfig::labels`].
pub(super) fn labels_of(config: &serde_json::Value) -> BTreeMap<String, String> {
    config["Labels"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_files_hold_what_a_line_can() {
        let (text, rest) = kv_file(
            [
                ("A", "1"),
                ("B", "x=y"),
                ("C", "two\nlines"),
                ("#D", "1"),
                ("E F", "1"),
                ("", "nameless"),
            ]
            .into_iter(),
        );
        assert_eq!(text, "A=1\nB=x=y\n");
        assert_eq!(rest, ["C=two\nlines", "#D=1", "E F=1"]);
        // podman's reader fails a whole file on a line of 64 KiB.
        let big = "x".repeat(70_000);
        let (text, rest) = kv_file([("BIG", big.as_str()), ("A", "1")].into_iter());
        assert_eq!(text, "A=1\n");
        assert_eq!(rest, [format!("BIG={big}")]);
    }
}
