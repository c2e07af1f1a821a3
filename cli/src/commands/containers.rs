//! `layerstore create | rm | rmi | mount | umount`: containers and their
//! mounts, and image removal, with containers/storage's safety rules.

use anyhow::{bail, Context};
use clap::Args;
use layerstore::driver::MountOptions;
use layerstore::idmap::{parse_id_map, root_pair, validate, IdMap};
use layerstore::ops::NewContainer;
use layerstore::records::Image;
use layerstore::snapshot::lookup;
use layerstore::userns::{AutoUserNs, Available};
use layerstore::{Snapshot, StoreError};
use layerstore_overlay::import::normalize_name;
use serde_json::json;

use crate::GlobalArgs;

/// Flags of `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The image (id, name or unique id prefix).
    pub image: String,
    /// A name for the container.
    #[arg(long)]
    pub name: Option<String>,
    /// The container's user namespace mapping.
    #[command(flatten)]
    pub mapping: MappingArgs,
    /// Print the container record as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--uidmap`, `--gidmap`, `--userns` and `--nocache`, as podman spells
/// the maps.
#[derive(Debug, Clone, Default, Args)]
pub struct MappingArgs {
    /// `host`, or `auto[:size=N][,uidmapping=C:H:S][,gidmapping=C:H:S]`:
    /// host ids of the container's own, from the `containers` entries of
    /// /etc/subuid and /etc/subgid, that no other container uses (as
    /// podman's --userns=auto chooses them).
    #[arg(long, value_name = "MODE")]
    pub userns: Option<String>,
    /// A uid map extent CONTAINER:HOST:SIZE (several allowed, also joined
    /// with ':'); without --gidmap it is used for gids too, as in podman.
    #[arg(long, value_name = "C:H:S")]
    pub uidmap: Vec<String>,
    /// A gid map extent CONTAINER:HOST:SIZE; without --uidmap it is used for
    /// uids too.
    #[arg(long, value_name = "C:H:S")]
    pub gidmap: Vec<String>,
    /// Never copy the image for a mapping: use its top layer, idmapped where
    /// the kernel allows, else with the files' on-disk owners.
    #[arg(long)]
    pub nocache: bool,
}

/// What the mapping flags ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapRequest {
    /// The uid map given (empty: host, or chosen by `auto`).
    pub uids: Vec<IdMap>,
    /// The gid map given.
    pub gids: Vec<IdMap>,
    /// `--userns=auto`: the maps are chosen when the container is made.
    pub auto: Option<AutoUserNs>,
}

impl MapRequest {
    /// Whether the container gets a user namespace.
    pub fn is_mapped(&self) -> bool {
        self.auto.is_some() || !self.uids.is_empty() || !self.gids.is_empty()
    }
}

impl MappingArgs {
    /// The maps given, or `--userns=auto`'s request. `--userns` other
    /// than `host` and `auto` is refused, as is `--userns` together with
    /// maps (podman's rule).
    pub fn request(&self) -> anyhow::Result<MapRequest> {
        let Some(mode) = self.userns.as_deref() else {
            let (uids, gids) = self.maps()?;
            return Ok(MapRequest {
                uids,
                gids,
                auto: None,
            });
        };
        if !self.uidmap.is_empty() || !self.gidmap.is_empty() {
            bail!("--userns and --uidmap/--gidmap are mutually exclusive");
        }
        match (mode, AutoUserNs::parse(mode)?) {
            (_, Some(auto)) => Ok(MapRequest {
                auto: Some(auto),
                ..MapRequest::default()
            }),
            ("" | "host", None) => Ok(MapRequest::default()),
            (other, None) => bail!(
                "--userns={other}: not supported; use host, auto[:OPTIONS] or --uidmap/--gidmap"
            ),
        }
    }

    /// The parsed and validated (uid, gid) maps; empty for the host mapping.
    pub fn maps(&self) -> anyhow::Result<(Vec<IdMap>, Vec<IdMap>)> {
        let parse = |flag: &str, items: &[String]| -> anyhow::Result<Vec<IdMap>> {
            let mut maps = Vec::new();
            for item in items {
                maps.extend(parse_id_map(item).with_context(|| format!("--{flag} {item}"))?);
            }
            validate(&maps).with_context(|| format!("--{flag} {}", items.join(" --{flag} ")))?;
            Ok(maps)
        };
        let mut uids = parse("uidmap", &self.uidmap)?;
        let mut gids = parse("gidmap", &self.gidmap)?;
        if gids.is_empty() {
            gids = uids.clone();
        } else if uids.is_empty() {
            uids = gids.clone();
        }
        if !uids.is_empty() {
            root_pair(&uids, &gids).context("the maps must map container root (uid and gid 0)")?;
        }
        Ok((uids, gids))
    }
}

/// `layerstore create`: a container (record and read-write layer) that
/// podman lists with `podman ps --external`.
pub fn create(global: &GlobalArgs, args: &CreateArgs) -> anyhow::Result<()> {
    let request = args.mapping.request()?;
    let (store, driver) = global.open_store_and_driver()?;
    let auto_userns = match request.auto {
        Some(auto) => Some((auto, Available::read(&store.options().auto_userns)?)),
        None => None,
    };
    let name = args.name.clone();
    // The image is found in the records the container is created under:
    // each lock once.
    let (container, _) = store.create_container_resolved(
        &driver,
        NewContainer {
            names: name.clone().into_iter().collect(),
            uidmap: request.uids,
            gidmap: request.gids,
            no_cache: args.mapping.nocache,
            auto_userns,
            ..NewContainer::default()
        },
        |images, new| {
            let image = find_image_in(images, &args.image)?;
            new.image = image.id.clone();
            new.metadata = json!({
                "image-name": image.names.first().cloned().unwrap_or_default(),
                "image-id": image.id,
                "name": name.clone().unwrap_or_default(),
                "created-at": std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            })
            .to_string();
            Ok(())
        },
    )?;
    if args.json {
        crate::output::print_records(std::slice::from_ref(&container))?;
    } else {
        println!("{}", container.id);
    }
    Ok(())
}

/// Flags of `rmi`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// What to remove (id, name or unique id prefix).
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Print what was removed as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The containers (id, name, layer id or unique id prefix).
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Also remove the storage of containers layerstore did not create
    /// (podman's): podman then cannot start them. Use `podman rm` instead.
    #[arg(long, short)]
    pub force: bool,
    /// Print what was removed as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `layerstore rm`: delete containers that are not mounted; only
/// layerstore's own unless `--force` (podman's containers are podman's).
pub fn rm(global: &GlobalArgs, args: &RmArgs) -> anyhow::Result<()> {
    let (store, driver) = global.open_store_and_driver()?;
    // Each removal checks the records under its own locks (a store whose
    // records cannot be trusted is refused before anything changes).
    let mut removed = Vec::new();
    for target in &args.targets {
        removed.push(store.delete_container(&driver, target, args.force)?);
    }
    report(&removed, args.json, "containers")
}

/// `layerstore rmi`: delete images no container uses, with the layers only
/// they used.
pub fn rmi(global: &GlobalArgs, args: &RemoveArgs) -> anyhow::Result<()> {
    let (store, driver) = global.open_store_and_driver()?;
    // The names resolved in one look at the records, all before the first
    // removal; each removal checks the records again under its locks.
    let snap = store.snapshot()?;
    snap.check()?;
    let ids = args
        .targets
        .iter()
        .map(|t| Ok(find_image(&snap, t)?.id.clone()))
        .collect::<Result<Vec<_>, StoreError>>()?;
    drop(snap);
    let mut removed = Vec::new();
    for id in ids {
        let layers = store.delete_image(&driver, &id)?;
        removed.push(json!({"image": id, "layers": layers}));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&removed)?);
    } else {
        for r in &removed {
            println!("{}", r["image"].as_str().unwrap_or_default());
        }
    }
    Ok(())
}

/// An image by id, name, unique id prefix, or a short name as podman
/// completes it (`name` -> `localhost/name:latest`, `docker.io/...`).
pub fn find_image<'a>(snap: &'a Snapshot, query: &str) -> Result<&'a Image, StoreError> {
    find_image_in(&snap.images, query)
}

/// [`find_image`] among image records.
pub fn find_image_in<'a>(images: &'a [Image], query: &str) -> Result<&'a Image, StoreError> {
    match lookup(images, query) {
        Err(StoreError::NotFound { .. }) => {
            for domain in ["localhost", "docker.io"] {
                if let Ok(name) = normalize_name(query, domain) {
                    if let Ok(image) = lookup(images, &name) {
                        return Ok(image);
                    }
                }
            }
            lookup(images, query)
        }
        other => other,
    }
}

fn report(ids: &[String], json: bool, what: &str) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&json!({ what: ids }))?);
    } else {
        for id in ids {
            println!("{id}");
        }
    }
    Ok(())
}

/// Flags of `mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// A container, or a layer (id, name or unique id prefix).
    pub target: String,
    /// For a container with a mapping whose layers cannot be idmapped
    /// here: mount anyway, files keeping their on-disk owners.
    #[arg(long)]
    pub nocache: bool,
    /// Print the mount as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `layerstore mount`: mount a container's (or a layer's) file system and
/// print where; counted in mountpoints.json as podman counts its mounts.
pub fn mount(global: &GlobalArgs, args: &MountArgs) -> anyhow::Result<()> {
    let (store, driver) = global.open_store_and_driver()?;
    store.snapshot()?.check()?;
    let (layer, path) = match store.mount_container(&driver, &args.target, args.nocache) {
        Ok((c, path)) => (c.layer, path),
        Err(StoreError::NotFound { .. }) => {
            let layer = store.snapshot()?.layer(&args.target)?.id.clone();
            let path = store.mount_layer(&driver, &layer, &MountOptions::default())?;
            (layer, path)
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        println!("{}", json!({"layer": layer, "path": path}));
    } else {
        println!("{}", path.display());
    }
    Ok(())
}

/// Flags of `umount`.
#[derive(Debug, Args)]
pub struct UmountArgs {
    /// A container, or a layer (id, name or unique id prefix).
    pub target: String,
    /// Unmount even if other users still hold the mount.
    #[arg(long, short)]
    pub force: bool,
}

/// A storage container `layerstore run` handed to podman is the root
/// filesystem of podman's container: not unmounted while podman has one on
/// it (podman is asked), unless `--force`.
fn refuse_podmans_rootfs(
    global: &GlobalArgs,
    c: &layerstore::records::Container,
) -> anyhow::Result<()> {
    if layerstore::gc::PodmanUse::from_metadata(&c.metadata).is_none() {
        return Ok(());
    }
    let view = crate::podman::containers(global).with_context(|| {
        format!(
            "storage container {} is the root filesystem of a podman container, and podman could \
             not be asked which (--force unmounts it anyway)",
            c.id
        )
    })?;
    if let Some(user) = view.storage_users.get(&c.id) {
        anyhow::bail!(
            "storage container {} is the root filesystem of podman container {user}: stop it \
             (podman stop {user}) and remove it (podman rm {user}; layerstore gc then releases the \
             storage), or unmount anyway with --force",
            c.id
        );
    }
    Ok(())
}

/// `layerstore umount`.
pub fn umount(global: &GlobalArgs, args: &UmountArgs) -> anyhow::Result<()> {
    let (store, driver) = global.open_store_and_driver()?;
    let snap = store.snapshot()?;
    snap.check()?;
    let layer = match snap.container(&args.target) {
        Ok(c) => {
            if !args.force {
                refuse_podmans_rootfs(global, c)?;
            }
            c.layer.clone()
        }
        Err(StoreError::NotFound { .. }) => snap.layer(&args.target)?.id.clone(),
        Err(e) => return Err(e.into()),
    };
    let left = store.unmount_layer(&driver, &layer, args.force)?;
    if left > 0 {
        eprintln!("{layer} is still mounted for {left} other user(s)");
    }
    Ok(())
}
