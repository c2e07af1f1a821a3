//! The user namespace of podman mode: which `--userns` podman would use
//! (flag, `$PODMAN_USERNS`, containers.conf, in podman's order), and the
//! check that a numeric user lies in the maps `--userns=auto` chose.

use layerstore_overlay::engine::Rootfs;
use layerstore_overlay::launch::user::{check_user_mapped, parse_user, UserSpec};

use super::podman_flags::{RunLine, UsageError};
use super::ImageRunConfig;

/// The `--userns` podman would use: the caller's; else, when the caller
/// gives no maps, `$PODMAN_USERNS`, else containers.conf's `[containers]
/// userns` (podman's order). Only `host` and `auto` can be given to a root
/// filesystem of ours.
pub(super) fn userns_mode(
    line: &RunLine,
    env: Option<&str>,
    conf: &super::podman_conf::EngineConf,
) -> anyhow::Result<Option<String>> {
    if let Some(mode) = line.last("userns") {
        return Ok(Some(mode.to_owned()));
    }
    if line.given("uidmap") || line.given("gidmap") {
        return Ok(None);
    }
    let (mode, from) = match env.filter(|e| !e.is_empty()) {
        Some(e) => (Some(e), "PODMAN_USERNS"),
        None => (
            conf.userns.as_deref(),
            "containers.conf [containers] userns",
        ),
    };
    match mode {
        None | Some("" | "host") => Ok(None),
        Some(mode) if mode == "auto" || mode.starts_with("auto:") => Ok(Some(mode.to_owned())),
        Some(mode) => Err(UsageError(format!(
            "{from} is {mode:?}: not supported by layerstore run; give --userns=host, \
             --userns=auto or --uidmap/--gidmap"
        ))
        .into()),
    }
}

/// With `--userns=auto`, a numeric `--user` (or the image's User) must be
/// in the maps chosen (`size=N` may leave it out).
pub(super) fn auto_user_mapped(
    request: &crate::commands::containers::MapRequest,
    rootfs: &Rootfs,
    line: &RunLine,
    config: &ImageRunConfig,
) -> anyhow::Result<()> {
    if request.auto.is_none() {
        return Ok(());
    }
    let spec = line.last("user").unwrap_or(&config.user);
    if let Ok(UserSpec::Ids(uid, gid)) = parse_user(spec) {
        let c = &rootfs.container;
        check_user_mapped(uid, gid.unwrap_or(uid), &c.uidmap, &c.gidmap)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_conf_userns_applies_without_maps() {
        let conf = |mode: &str| super::super::podman_conf::EngineConf {
            userns: Some(mode.to_owned()),
            ..Default::default()
        };
        let auto = conf("auto:size=2000");
        fn mode(
            l: &str,
            env: Option<&str>,
            c: &super::super::podman_conf::EngineConf,
        ) -> anyhow::Result<Option<String>> {
            let args: Vec<String> = l.split(' ').map(str::to_owned).collect();
            userns_mode(&super::super::podman_flags::parse(&args).unwrap(), env, c)
        }
        assert_eq!(
            mode("img", None, &auto).unwrap().as_deref(),
            Some("auto:size=2000")
        );
        assert_eq!(mode("--uidmap 0:1:1 img", None, &auto).unwrap(), None);
        assert_eq!(
            mode("--userns=host img", None, &auto).unwrap().as_deref(),
            Some("host")
        );
        assert_eq!(mode("img", None, &conf("host")).unwrap(), None);
        let e = mode("img", None, &conf("keep-id")).unwrap_err().to_string();
        assert!(
            e.contains("containers.conf") && e.contains("keep-id"),
            "{e}"
        );
        assert_eq!(
            mode("--gidmap 0:1:1 img", None, &conf("keep-id")).unwrap(),
            None
        );
        // $PODMAN_USERNS comes between the flag and containers.conf.
        assert_eq!(mode("img", Some("host"), &auto).unwrap(), None);
        assert_eq!(
            mode("img", Some("auto"), &conf("host")).unwrap().as_deref(),
            Some("auto")
        );
        assert_eq!(
            mode("img", Some(""), &auto).unwrap().as_deref(),
            Some("auto:size=2000")
        );
        let e = mode("img", Some("keep-id"), &auto).unwrap_err().to_string();
        assert!(e.contains("PODMAN_USERNS") && e.contains("keep-id"), "{e}");
        assert_eq!(
            mode("--userns=auto img", Some("keep-id"), &auto)
                .unwrap()
                .as_deref(),
            Some("auto")
        );
        assert_eq!(
            mode("--uidmap 0:1:1 img", Some("keep-id"), &auto).unwrap(),
            None
        );
    }
}
