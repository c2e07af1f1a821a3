//! `--userns=auto` on this host: whose subordinate ids it uses
//! (`/etc/subuid`, `/etc/subgid`), how many are free of the maps the
//! store's containers record, and so how many more containers of the
//! default size fit ([`layerstore::userns`]).
//!
//! No entries is not a fault (most hosts never use `--userns=auto`): the
//! check is `ok` and says so; a file that cannot be used, or room for
//! fewer than ten more containers, is a warning.

use layerstore::records::Container;
use layerstore::userns::{AutoUserNsConfig, AutoUserNsError, Available, IdSet};
use serde_json::json;

use super::{error_chain, Area, Check, Status};

/// Fewer free ids than this many default-size namespaces is a warning.
const FEW: u64 = 10;

/// The `userns.auto` check for a store configured with `config` whose
/// containers are `containers` (`None`: the records could not be read, so
/// what is free is unknown and nothing is said).
pub fn checks(config: &AutoUserNsConfig, containers: Option<&[Container]>) -> Vec<Check> {
    containers
        .map(|c| vec![auto_check(config, c)])
        .unwrap_or_default()
}

/// Whether the owner has ranges of the other kind than `missing`: then
/// the missing ones are a mistake, not "not set up".
fn has_other_kind(config: &AutoUserNsConfig, missing: &str) -> bool {
    let other = if missing == "uid" {
        &config.subgid
    } else {
        &config.subuid
    };
    layerstore::userns::subid::read(other, &config.owner).is_ok_and(|s| !s.is_empty())
}

fn auto_check(config: &AutoUserNsConfig, containers: &[Container]) -> Check {
    let id = "userns.auto";
    let owner = &config.owner.name;
    let available = match Available::read(config) {
        Ok(a) => a,
        Err(AutoUserNsError::NoSubordinateIds { kind, file, .. })
            if !has_other_kind(config, kind) =>
        {
            return Check::new(
                id,
                Area::Run,
                Status::Ok,
                format!(
                    "--userns=auto is not set up: {owner:?} has no subordinate {kind}s in {}",
                    file.display()
                ),
                "only --userns=auto needs them; explicit --uidmap/--gidmap work without",
            )
            .fix(format!(
                "to use --userns=auto, give {owner:?} a range in /etc/subuid and /etc/subgid \
                 that no user has (podman's docs use containers:2147483647:2147483648)"
            ))
            .facts(json!({ "owner": owner, "configured": false }));
        }
        Err(e) => {
            return Check::new(
                id,
                Area::Run,
                Status::Warn,
                format!(
                    "cannot use the subordinate ids of {owner:?}: {}",
                    error_chain(&e)
                ),
                "layerstore run --userns=auto and podman's refuse to allocate",
            )
            .fix("correct the line the message names")
        }
    };
    let free = |set: &IdSet, used: &mut dyn Iterator<Item = &layerstore::idmap::IdMap>| {
        set.subtract(&IdSet::host_ids(used)).len()
    };
    let free_uids = free(
        &available.uids,
        &mut containers.iter().flat_map(|c| c.uidmap.iter()),
    );
    let free_gids = free(
        &available.gids,
        &mut containers.iter().flat_map(|c| c.gidmap.iter()),
    );
    let size = u64::from(config.max_size.max(1));
    let fit = free_uids.min(free_gids) / size;
    let status = if fit < FEW { Status::Warn } else { Status::Ok };
    let check = Check::new(
        id,
        Area::Run,
        status,
        format!(
            "{owner:?}: {free_uids} of {} subordinate uids and {free_gids} of {} gids free: \
             {fit} more containers of {size} ids fit",
            available.uids.len(),
            available.gids.len()
        ),
        if status == Status::Warn {
            "--userns=auto fails once the free ids run out"
        } else {
            "--userns=auto has room"
        },
    )
    .facts(json!({
        "owner": owner,
        "configured": true,
        "free_uids": free_uids,
        "free_gids": free_gids,
        "size": size,
        "fit": fit,
    }));
    if status == Status::Warn {
        check.fix(format!(
            "add a range for {owner:?} to {} and {}, or remove containers",
            config.subuid.display(),
            config.subgid.display()
        ))
    } else {
        check
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use layerstore::idmap::IdMap;

    fn config(dir: &std::path::Path, subuid: &str, subgid: &str) -> AutoUserNsConfig {
        std::fs::write(dir.join("subuid"), subuid).unwrap();
        std::fs::write(dir.join("subgid"), subgid).unwrap();
        AutoUserNsConfig {
            subuid: dir.join("subuid"),
            subgid: dir.join("subgid"),
            ..AutoUserNsConfig::default()
        }
    }

    #[test]
    fn room_missing_entries_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let roomy = config(
            dir.path(),
            "containers:100000:6553600\n",
            "containers:100000:6553600\n",
        );
        let map = vec![IdMap {
            container_id: 0,
            host_id: 100000,
            size: 65536,
        }];
        let c = Container {
            uidmap: map.clone(),
            gidmap: map,
            ..Container::default()
        };
        let check = auto_check(&roomy, std::slice::from_ref(&c));
        assert_eq!(check.status, Status::Ok, "{check:?}");
        assert_eq!(check.facts["fit"], 99);
        let tight = config(
            dir.path(),
            "containers:100000:655360\n",
            "containers:100000:655360\n",
        );
        let check = auto_check(&tight, &[c]);
        assert_eq!(check.status, Status::Warn, "{check:?}");
        assert_eq!(check.facts["fit"], 9);
        assert!(check.fix.unwrap().contains("add a range"));
        let none = config(dir.path(), "someone:1:2\n", "");
        let check = auto_check(&none, &[]);
        assert_eq!(check.status, Status::Ok);
        assert!(check.seen.contains("not set up"), "{check:?}");
        let half = config(dir.path(), "containers:100000:6553600\n", "");
        let check = auto_check(&half, &[]);
        assert_eq!(check.status, Status::Warn, "{check:?}");
        assert!(check.seen.contains("no subordinate gids"), "{check:?}");
        assert!(checks(&half, None).is_empty());
        let bad = config(dir.path(), "containers:x:1\n", "containers:1:1\n");
        let check = auto_check(&bad, &[]);
        assert_eq!(check.status, Status::Warn);
        assert!(check.seen.contains("subuid:1"), "{check:?}");
    }
}
