//! `layerstore remount`: mount again the root filesystems `layerstore run`
//! handed to podman, for the podman containers that still exist: what a
//! host needs after a reboot before podman starts its containers
//! (`contrib/systemd/layerstore-remount.service` runs it at boot, before
//! podman-restart.service).
//!
//! podman is asked which containers use which storage container (their
//! label); a storage container no podman container uses is left to `gc`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use layerstore::driver::Driver;
use layerstore::gc::{run_owner_of, PodmanUse};
use layerstore::LayerId;

use crate::GlobalArgs;

/// Flags of `remount`.
#[derive(Debug, Args)]
pub struct RemountArgs {}

/// `layerstore remount`: prints each storage container it mounted; exit 1
/// when one could not be mounted (the others still are).
pub fn run(global: &GlobalArgs, _args: &RemountArgs) -> anyhow::Result<ExitCode> {
    let (store, driver) = global.open_store_and_driver()?;
    let snap = store.snapshot()?;
    snap.check()?;
    let handed: Vec<(String, LayerId, PodmanUse)> = snap
        .containers
        .iter()
        .filter(|c| run_owner_of(c, &snap.layers).is_some())
        .filter_map(|c| {
            let marker = PodmanUse::from_metadata(&c.metadata)?;
            Some((c.id.clone(), LayerId::parse(&c.layer).ok()?, marker))
        })
        .filter(|(_, layer, _)| !driver.is_mounted(layer))
        .collect();
    drop(snap);
    if handed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let podman = crate::podman::containers(global)
        .context("asking podman which containers use the storage layerstore run handed it")?;
    let mut failed = false;
    for (id, _, marker) in handed {
        let Some(user) = podman.storage_users.get(&id) else {
            tracing::info!(container = %id, "no podman container uses it; left to gc");
            continue;
        };
        match store.mount_container(&driver, &id, marker.nocache) {
            Ok((_, path)) => {
                println!("{id}");
                tracing::info!(container = %id, podman = %user, path = %path.display(), "mounted again");
            }
            Err(e) => {
                failed = true;
                eprintln!(
                    "error: mounting storage container {id} (of podman container {user}): {}",
                    crate::output::printable_lines(&format!("{e:#}"))
                );
            }
        }
    }
    Ok(if failed {
        ExitCode::from(crate::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}
