//! What podman's containers.conf says about the OCI runtime, read the way
//! containers/common (v0.50, podman 4.3.1) reads it, so that the runtime
//! `layerstore run` wraps is the one podman would have run.
//!
//! ```text
//! $CONTAINERS_CONF                                  alone, when set
//! /usr/share/containers/containers.conf             else, in this order,
//! /etc/containers/containers.conf                   later keys win
//! /etc/containers/containers.conf.d/*.conf          (sorted)
//! $XDG_CONFIG_HOME|~/.config/containers/containers.conf{,.d/*.conf}  (not root)
//! ```
//!
//! `[engine] runtime` names the runtime (default: the first of crun, runc,
//! runj, kata, runsc that is installed); `[engine.runtimes]` lists the paths
//! tried for each name, on top of containers/common's built-in lists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use layerstore_overlay::doctor::keyring::{conf_d_files, ConfEnv};

/// The `[engine]` keys layerstore needs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct EngineConf {
    /// `runtime`.
    pub(crate) runtime: Option<String>,
    /// `[engine.runtimes]`: name -> paths.
    pub(crate) runtimes: BTreeMap<String, Vec<String>>,
    /// `hooks_dir`.
    pub(crate) hooks_dir: Option<Vec<String>>,
    /// `[containers] userns`.
    pub(crate) userns: Option<String>,
}

/// containers/common's built-in paths for the runtimes it searches first.
fn builtin_paths(name: &str) -> &'static [&'static str] {
    match name {
        "crun" => &[
            "/usr/bin/crun",
            "/usr/sbin/crun",
            "/usr/local/bin/crun",
            "/usr/local/sbin/crun",
            "/sbin/crun",
            "/bin/crun",
            "/run/current-system/sw/bin/crun",
        ],
        "runc" => &[
            "/usr/bin/runc",
            "/usr/sbin/runc",
            "/usr/local/bin/runc",
            "/usr/local/sbin/runc",
            "/sbin/runc",
            "/bin/runc",
            "/usr/lib/cri-o-runc/sbin/runc",
            "/run/current-system/sw/bin/runc",
        ],
        _ => &[],
    }
}

/// The files containers/common reads, in order (the doctor's
/// [`ConfEnv`] list); `$CONTAINERS_CONF` must exist when set, as podman
/// requires.
pub(crate) fn files() -> anyhow::Result<Vec<PathBuf>> {
    let env = ConfEnv::from_process();
    if let Some(path) = &env.containers_conf {
        std::fs::metadata(path)
            .with_context(|| format!("CONTAINERS_CONF file {}", path.display()))?;
    }
    Ok(env
        .files(conf_d_files)
        .into_iter()
        .filter(|f| f.is_file())
        .collect())
}

/// Read and merge the files.
pub(crate) fn load() -> anyhow::Result<EngineConf> {
    let mut conf = EngineConf::default();
    for file in files()? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        merge(&mut conf, &text).with_context(|| format!("reading {}", file.display()))?;
    }
    Ok(conf)
}

fn merge(conf: &mut EngineConf, text: &str) -> anyhow::Result<()> {
    let value: toml::Table = text.parse().context("not TOML")?;
    if let Some(userns) = value
        .get("containers")
        .and_then(|c| c.as_table())
        .and_then(|c| c.get("userns"))
    {
        let mode = userns
            .as_str()
            .context("[containers] userns: expected a string")?;
        conf.userns = Some(mode.to_owned());
    }
    let Some(engine) = value.get("engine") else {
        return Ok(());
    };
    let Some(engine) = engine.as_table() else {
        bail!("[engine] is not a table");
    };
    let strings = |key: &str, v: &toml::Value| -> anyhow::Result<Vec<String>> {
        v.as_array()
            .with_context(|| format!("{key}: expected a list of strings"))?
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("{key}: expected a list of strings"))
            })
            .collect()
    };
    if let Some(v) = engine.get("runtime") {
        let name = v.as_str().context("runtime: expected a string")?;
        conf.runtime = (!name.is_empty()).then(|| name.to_owned());
    }
    if let Some(v) = engine.get("hooks_dir") {
        conf.hooks_dir = Some(strings("hooks_dir", v)?);
    }
    if let Some(v) = engine.get("runtimes") {
        let table = v.as_table().context("[engine.runtimes] is not a table")?;
        for (name, paths) in table {
            conf.runtimes
                .insert(name.clone(), strings(&format!("runtimes.{name}"), paths)?);
        }
    }
    Ok(())
}

/// podman's default hooks directories (when containers.conf sets none;
/// rootless podman then uses none).
const DEFAULT_HOOKS_DIRS: &[&str] = &[
    "/usr/share/containers/oci/hooks.d",
    "/etc/containers/oci/hooks.d",
];

impl EngineConf {
    /// The hooks directories podman reads.
    pub(crate) fn hooks_dirs(&self) -> Vec<PathBuf> {
        match &self.hooks_dir {
            Some(dirs) => dirs.iter().map(PathBuf::from).collect(),
            None if rustix::process::geteuid().is_root() => {
                DEFAULT_HOOKS_DIRS.iter().map(PathBuf::from).collect()
            }
            None => Vec::new(),
        }
    }

    /// Whether one of podman's hooks directories holds layerstore's hook (a
    /// `*.json` file naming `oci-hook` and the storage container
    /// annotation).
    pub(crate) fn has_layerstore_hook(&self) -> bool {
        self.hooks_dirs().iter().any(|dir| {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let p = e.path();
                    p.extension().is_some_and(|x| x == "json")
                        && std::fs::read_to_string(&p).is_ok_and(|t| {
                            t.contains("oci-hook")
                                && t.contains("io\\\\.layerstore\\\\.storage-container")
                        })
                })
        })
    }
}

fn executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| executable(p))
}

impl EngineConf {
    fn paths_of(&self, name: &str) -> Vec<PathBuf> {
        self.runtimes
            .get(name)
            .map(|p| p.iter().map(PathBuf::from).collect())
            .unwrap_or_else(|| builtin_paths(name).iter().map(PathBuf::from).collect())
    }

    fn find(&self, name: &str) -> Option<PathBuf> {
        self.paths_of(name)
            .into_iter()
            .find(|p| executable(p))
            .or_else(|| on_path(name))
    }

    /// The runtime podman runs: `requested` (podman's `--runtime`: a name or
    /// a path), else `runtime`, else the first installed of crun, runc,
    /// runj, kata, runsc. Its path, which must be an executable file.
    pub(crate) fn runtime(&self, requested: Option<&str>) -> anyhow::Result<PathBuf> {
        let name = match requested.or(self.runtime.as_deref()) {
            Some(n) => n.to_owned(),
            None => ["crun", "runc", "runj", "kata", "runsc"]
                .into_iter()
                .find(|n| self.find(n).is_some())
                .context("no OCI runtime is installed (none of crun, runc, runj, kata, runsc)")?
                .to_owned(),
        };
        if name.contains('/') {
            let path = PathBuf::from(&name);
            if !executable(&path) {
                bail!("OCI runtime {name}: no executable file there");
            }
            return Ok(path);
        }
        self.find(&name).with_context(|| {
            format!(
                "OCI runtime {name:?} not found (tried {} and PATH)",
                self.paths_of(&name)
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_files_win_and_runtimes_merge_by_name() {
        let mut conf = EngineConf::default();
        merge(
            &mut conf,
            "[engine]\nruntime = \"crun\"\n[engine.runtimes]\ncrun = [\"/a/crun\"]\n",
        )
        .unwrap();
        merge(
            &mut conf,
            "[containers]\nx = 1\n[engine]\nruntime = \"runc\"\nhooks_dir = [\"/h\"]\n[engine.runtimes]\nrunc = [\"/b/runc\"]\n",
        )
        .unwrap();
        assert_eq!(conf.runtime.as_deref(), Some("runc"));
        assert_eq!(conf.hooks_dir, Some(vec!["/h".to_owned()]));
        assert_eq!(conf.runtimes.len(), 2);
        assert_eq!(conf.paths_of("runc"), [PathBuf::from("/b/runc")]);
        assert_eq!(conf.paths_of("crun"), [PathBuf::from("/a/crun")]);
        assert!(conf.paths_of("kata").is_empty());
    }

    #[test]
    fn bad_values_are_named() {
        let mut conf = EngineConf::default();
        let e = merge(&mut conf, "[engine]\nruntime = 3\n").unwrap_err();
        assert!(format!("{e:#}").contains("runtime"), "{e:#}");
        let e = merge(&mut conf, "[engine]\nhooks_dir = [1]\n").unwrap_err();
        assert!(format!("{e:#}").contains("hooks_dir"), "{e:#}");
        assert!(merge(&mut conf, "not = [toml").is_err());
    }

    #[test]
    fn the_hook_is_found_by_its_printed_config() {
        let dir = tempfile::tempdir().unwrap();
        let conf = EngineConf {
            hooks_dir: Some(vec![dir.path().display().to_string()]),
            ..EngineConf::default()
        };
        assert!(!conf.has_layerstore_hook());
        std::fs::write(
            dir.path().join("other.json"),
            "{\"hook\":{\"path\":\"/bin/true\"}}",
        )
        .unwrap();
        assert!(!conf.has_layerstore_hook());
        let config = crate::commands::oci_hook::hook_config(Path::new("/usr/bin/layerstore"));
        std::fs::write(
            dir.path().join("layerstore.json"),
            serde_json::to_string_pretty(&config).unwrap(),
        )
        .unwrap();
        assert!(conf.has_layerstore_hook());
    }

    #[test]
    fn a_path_must_be_executable() {
        let conf = EngineConf::default();
        let e = conf.runtime(Some("/nonexistent/runc")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/runc"), "{e}");
        let e = conf.runtime(Some("no-such-runtime")).unwrap_err();
        assert!(e.to_string().contains("no-such-runtime"), "{e}");
    }
}
