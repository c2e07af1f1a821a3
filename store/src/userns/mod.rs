//! `--userns=auto`: a host id range of its own for each container, chosen
//! as containers/storage chooses it (`userns.go:getAutoUserNS`, podman's
//! `GetAutoOptions` and `setupStorageMapping`).
//!
//! ```text
//! /etc/subuid, /etc/subgid   containers:START:COUNT lines (root), the user's own (rootless)
//! <graphroot>/userns.lock    held by the allocating process until the record is saved
//! <graphroot>/overlay-containers/containers.json   uidmap/gidmap of every container: in use
//! ```
//!
//! The rules, each a pure function here:
//! - **Ids to choose from** ([`Available`]): the `containers` entries of
//!   `/etc/subuid` and `/etc/subgid` (storage.conf `root-auto-userns-user`
//!   names another), several entries combining; rootless, the caller's own
//!   entries, as ids `1..=N` of the caller's user namespace, as rootless
//!   podman sees them.
//! - **Size** ([`needed_size`]): `size=N` when given; else the largest of 1,
//!   one more than the highest numeric part of `--user`, storage.conf
//!   `auto-userns-min-size` (1024) and what the image uses (one more than
//!   the highest id in its layers' `uidset`/`gidset` and in its
//!   `/etc/passwd` and `/etc/group`, the names `nobody`/`nogroup` and id
//!   65534 aside), refused above `auto-userns-max-size` (65536).
//! - **Choice** ([`allocate`]): container ids `0..size`, less those the
//!   `uidmapping=`/`gidmapping=` extents give, take the lowest free host
//!   ids: free means in the subordinate ranges and in no extent any
//!   container records (podman's, layerstore's, storage containers), nor
//!   in the extra extents. The extra extents are appended as given.
//!
//! Where this differs from containers/storage v1.43, it follows upstream:
//! v1.43 reads the image's `/etc/group` from a path relative to podman's
//! working directory and counts `/etc/passwd` ids without the `+ 1`.
//! Upstream's `u.Uid > size` comparison skips an id equal to the running
//! size; here every id counts (`max(id + 1)`), so the highest id of the
//! image's users is always mapped.

mod idset;
pub mod subid;

use std::path::PathBuf;

pub use idset::IdSet;
pub use subid::{Owner, SubIdError};

use crate::idmap::{parse_id_map, validate, IdMap, IdMapError, IdMappings};
use crate::records::Layer;

/// The default of storage.conf `auto-userns-min-size`.
pub const DEFAULT_MIN_SIZE: u32 = 1024;
/// The default of storage.conf `auto-userns-max-size`.
pub const DEFAULT_MAX_SIZE: u32 = 65536;
/// The subordinate id owner of root's `--userns=auto` by default.
pub const DEFAULT_ROOT_USER: &str = "containers";
/// The id images conventionally give `nobody`, not counted for the size.
pub const NOBODY_ID: u32 = 65534;

/// `--userns=auto[:size=N][,uidmapping=C:H:S][,gidmapping=C:H:S]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutoUserNs {
    /// `size=N`: exactly this many ids (`None` or 0: decided by the rules).
    pub size: Option<u32>,
    /// The least size (podman: one more than `--user`'s highest number).
    pub initial_size: u32,
    /// `uidmapping=` extents added as given.
    pub extra_uids: Vec<IdMap>,
    /// `gidmapping=` extents added as given.
    pub extra_gids: Vec<IdMap>,
    /// The bytes of a host file that stands for the image's `/etc/passwd`
    /// (mounted over it: podman's `PasswdFile`), read by the caller before
    /// any lock is taken.
    pub passwd: Option<Vec<u8>>,
    /// Likewise for `/etc/group`.
    pub group: Option<Vec<u8>>,
}

/// Why no mapping could be chosen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AutoUserNsError {
    /// The `--userns=auto` text is not podman's syntax.
    #[error("--userns={mode}: {reason}")]
    Syntax {
        /// The whole mode given.
        mode: String,
        /// What is wrong.
        reason: String,
    },
    /// A `uidmapping=`/`gidmapping=` extent is not `C:H:S`.
    #[error("--userns={mode}: {option}")]
    Extent {
        /// The whole mode given.
        mode: String,
        /// The option.
        option: String,
        /// Why.
        source: IdMapError,
    },
    /// A subordinate id file could not be used.
    #[error(transparent)]
    SubId(#[from] SubIdError),
    /// The owner has no ranges in a subordinate id file.
    #[error(
        "--userns=auto: {owner:?} has no subordinate {kind}s in {}: {}",
        file.display(),
        if *rootless {
            format!(
                "give the user a range no other user or \"containers\" has, e.g. \
                 `usermod --add-sub{kind}s START-END {owner}` (subuid(5))"
            )
        } else {
            format!(
                "add a line such as \"{owner}:2147483647:2147483648\" to it \
                 (podman-run(1), --userns=auto)"
            )
        }
    )]
    NoSubordinateIds {
        /// `uid` or `gid`.
        kind: &'static str,
        /// Whose ranges were looked for.
        owner: String,
        /// The file.
        file: PathBuf,
        /// The owner is the rootless caller.
        rootless: bool,
    },
    /// The image needs more ids than storage.conf allows.
    #[error(
        "--userns=auto: the container needs a user namespace of {size} ids ({reason}), more \
         than auto-userns-max-size ({max}{}): give --userns=auto:size=N or raise the limit",
        config.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default()
    )]
    TooBig {
        /// The size the rules give.
        size: u32,
        /// What needs it.
        reason: String,
        /// The limit.
        max: u32,
        /// The storage.conf the limit came from, if any.
        config: Option<PathBuf>,
    },
    /// Not enough free ids.
    #[error(transparent)]
    Exhausted(Box<Exhaustion>),
    /// Maps were given as well as `--userns=auto`.
    #[error("--userns=auto cannot be combined with uid/gid maps")]
    WithMaps,
}

/// Not enough free subordinate ids for the container.
#[derive(Debug, thiserror::Error)]
#[error(
    "--userns=auto: the container needs {needed} {kind}s, but only {} of the {} \
     subordinate {kind}s of {owner:?} in {} are free ({}free: {}; in use by containers: {}): \
     add a range for {owner:?} to {}, or remove containers",
    free.len(),
    available.len(),
    file.display(),
    if *rootless { "as ids of the user's namespace, " } else { "" },
    Summary(free),
    Summary(in_use),
    file.display()
)]
pub struct Exhaustion {
    /// `uid` or `gid`.
    pub kind: &'static str,
    /// How many the container needs from the ranges.
    pub needed: u64,
    /// The owner's ranges.
    pub available: IdSet,
    /// The part of them containers use.
    pub in_use: IdSet,
    /// What is left.
    pub free: IdSet,
    /// Whose ranges.
    pub owner: String,
    /// The file they are in.
    pub file: PathBuf,
    /// The ids are the rootless caller's, numbered as in its namespace.
    pub rootless: bool,
}

/// An [`IdSet`] for messages: at most 8 ranges.
struct Summary<'a>(&'a IdSet);

impl std::fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MAX: usize = 8;
        let ranges = self.0.ranges();
        if ranges.len() <= MAX {
            return write!(f, "{}", self.0);
        }
        let head = IdSet::from_ranges(ranges[..MAX].iter().cloned());
        write!(f, "{head}, and {} more ranges", ranges.len() - MAX)
    }
}

impl AutoUserNs {
    /// podman's `--userns` value: `Ok(None)` unless it is `auto` or
    /// `auto:OPTIONS` (`GetAutoOptions`).
    pub fn parse(mode: &str) -> Result<Option<AutoUserNs>, AutoUserNsError> {
        let (kind, options) = match mode.split_once(':') {
            Some((k, o)) => (k, Some(o)),
            None => (mode, None),
        };
        if kind != "auto" {
            return Ok(None);
        }
        let mut auto = AutoUserNs::default();
        let Some(options) = options else {
            return Ok(Some(auto));
        };
        let syntax = |reason: String| AutoUserNsError::Syntax {
            mode: mode.to_owned(),
            reason,
        };
        for option in options.split(',') {
            let Some((key, value)) = option.split_once('=') else {
                return Err(syntax(format!(
                    "invalid option {option:?}: expected size=N, uidmapping=C:H:S or gidmapping=C:H:S"
                )));
            };
            let extent = |value: &str| {
                parse_id_map(value).map_err(|source| AutoUserNsError::Extent {
                    mode: mode.to_owned(),
                    option: option.to_owned(),
                    source,
                })
            };
            match key {
                "size" => {
                    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
                    let n = value
                        .parse::<u32>()
                        .ok()
                        .filter(|_| digits)
                        .ok_or_else(|| {
                            syntax(format!(
                                "size={value:?} is not a number from 0 to 4294967295"
                            ))
                        })?;
                    auto.size = (n > 0).then_some(n);
                }
                "uidmapping" => auto.extra_uids.extend(extent(value)?),
                "gidmapping" => auto.extra_gids.extend(extent(value)?),
                _ => {
                    return Err(syntax(format!(
                        "unknown option {key:?}: expected size, uidmapping or gidmapping"
                    )))
                }
            }
        }
        for (extents, option) in [
            (&auto.extra_uids, "uidmapping"),
            (&auto.extra_gids, "gidmapping"),
        ] {
            validate(extents).map_err(|source| AutoUserNsError::Extent {
                mode: mode.to_owned(),
                option: option.to_owned(),
                source,
            })?;
        }
        Ok(Some(auto))
    }

    /// The least size for a container run as `user` (`--user`): one more
    /// than its highest numeric part, as podman's `setupStorageMapping`.
    pub fn initial_size_for_user(user: &str) -> u32 {
        user.split(':')
            .filter_map(|p| p.parse::<u32>().ok())
            .max()
            .map_or(0, |n| n.saturating_add(1))
    }
}

/// The limits and sources of `--userns=auto` a store is configured with
/// (storage.conf `[storage.options]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoUserNsConfig {
    /// Whose subordinate ranges to use.
    pub owner: Owner,
    /// Rootless: the ranges are the caller's, seen as `1..=N`.
    pub rootless: bool,
    /// `auto-userns-min-size`.
    pub min_size: u32,
    /// `auto-userns-max-size`.
    pub max_size: u32,
    /// The subordinate uid file.
    pub subuid: PathBuf,
    /// The subordinate gid file.
    pub subgid: PathBuf,
    /// The storage.conf that set `auto-userns-max-size`, for messages
    /// (`None`: the default holds).
    pub config_file: Option<PathBuf>,
}

impl Default for AutoUserNsConfig {
    fn default() -> AutoUserNsConfig {
        AutoUserNsConfig {
            owner: Owner {
                name: DEFAULT_ROOT_USER.to_owned(),
                uid: None,
            },
            rootless: false,
            min_size: DEFAULT_MIN_SIZE,
            max_size: DEFAULT_MAX_SIZE,
            subuid: PathBuf::from("/etc/subuid"),
            subgid: PathBuf::from("/etc/subgid"),
            config_file: None,
        }
    }
}

/// The ids `--userns=auto` may choose from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Available {
    /// Host uids.
    pub uids: IdSet,
    /// Host gids.
    pub gids: IdSet,
    /// Whose they are.
    pub owner: String,
    /// Where the uids are listed.
    pub subuid: PathBuf,
    /// Where the gids are listed.
    pub subgid: PathBuf,
    /// The ids are the rootless caller's, numbered as in its namespace.
    pub rootless: bool,
}

impl Available {
    /// Read the owner's ranges from the configured files. Rootless, the
    /// ranges become `1..=N` of the caller's user namespace.
    pub fn read(config: &AutoUserNsConfig) -> Result<Available, AutoUserNsError> {
        let mut uids = subid::read(&config.subuid, &config.owner)?;
        let mut gids = subid::read(&config.subgid, &config.owner)?;
        for (set, kind, file) in [
            (&uids, "uid", &config.subuid),
            (&gids, "gid", &config.subgid),
        ] {
            if set.is_empty() {
                return Err(AutoUserNsError::NoSubordinateIds {
                    kind,
                    owner: config.owner.name.clone(),
                    file: file.clone(),
                    rootless: config.rootless,
                });
            }
        }
        if config.rootless {
            uids = IdSet::span(1, 1 + uids.len());
            gids = IdSet::span(1, 1 + gids.len());
        }
        Ok(Available {
            uids,
            gids,
            owner: config.owner.name.clone(),
            subuid: config.subuid.clone(),
            subgid: config.subgid.clone(),
            rootless: config.rootless,
        })
    }
}

/// The highest id that can be owned: 4294967295 is `(uid_t)-1`, "no
/// id", and is never counted.
const MAX_ID: u32 = u32::MAX - 1;

/// One more than the highest id in the layers' `uidset` and `gidset`.
pub fn size_from_layers<'a>(chain: impl IntoIterator<Item = &'a Layer>) -> u32 {
    chain
        .into_iter()
        .flat_map(|l| l.uidset.iter().chain(&l.gidset))
        .filter(|&&id| id <= MAX_ID)
        .map(|&id| id + 1)
        .max()
        .unwrap_or(0)
}

/// One more than the highest id of the users in `passwd` (uid and primary
/// gid) and of the groups in `group`, `nobody`, `nogroup`, id 65534 and
/// ids that cannot be owned aside. Lines are read as runc's
/// `libcontainer/user` reads them: fields split at `:`, unparsable numbers
/// counting as 0.
pub fn size_from_user_files(passwd: Option<&[u8]>, group: Option<&[u8]>) -> u32 {
    let highest = |text: &[u8], columns: &[usize]| -> u32 {
        let mut max = 0;
        for line in text.split(|&b| b == b'\n') {
            let line = line.trim_ascii();
            let mut fields = line.split(|&b| b == b':');
            if line.is_empty() || matches!(fields.next(), Some(b"nobody" | b"nogroup")) {
                continue;
            }
            // Columns counted from the second field, in increasing order.
            let mut at = 1;
            for &c in columns {
                let field = fields.nth(c - at);
                at = c + 1;
                let id = field
                    .and_then(|f| std::str::from_utf8(f).ok())
                    .and_then(|f| f.parse::<i64>().ok())
                    .unwrap_or(0);
                if let Ok(id) = u32::try_from(id) {
                    if id != NOBODY_ID && id <= MAX_ID {
                        max = max.max(id + 1);
                    }
                }
            }
        }
        max
    };
    let users = passwd.map_or(0, |p| highest(p, &[2, 3]));
    users.max(group.map_or(0, |g| highest(g, &[2])))
}

/// What the image needs: [`size_from_layers`] and [`size_from_user_files`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageNeeds {
    /// From the ids owning its files.
    pub files: u32,
    /// From its `/etc/passwd` and `/etc/group`.
    pub users: u32,
}

/// The size of the user namespace: `size=N`, or the rules of the module
/// docs over what the image needs (`None` without an image).
pub fn needed_size(
    auto: &AutoUserNs,
    config: &AutoUserNsConfig,
    image: Option<ImageNeeds>,
) -> Result<u32, AutoUserNsError> {
    if let Some(size) = auto.size.filter(|&s| s > 0) {
        return Ok(size);
    }
    let image = image.unwrap_or_default();
    let needs = [
        (1, String::new()),
        (
            auto.initial_size,
            format!(
                "the container's user needs id {}",
                auto.initial_size.saturating_sub(1)
            ),
        ),
        (config.min_size, "auto-userns-min-size".to_owned()),
        (
            image.files,
            format!(
                "a file of the image is owned by id {}",
                image.files.saturating_sub(1)
            ),
        ),
        (
            image.users,
            format!(
                "the container's /etc/passwd or /etc/group names id {}",
                image.users.saturating_sub(1)
            ),
        ),
    ];
    let (size, reason) = needs
        .into_iter()
        .reduce(|a, b| if b.0 > a.0 { b } else { a })
        .unwrap_or((1, String::new()));
    if config.max_size > 0 && size > config.max_size {
        return Err(AutoUserNsError::TooBig {
            size,
            reason,
            max: config.max_size,
            config: config.config_file.clone(),
        });
    }
    Ok(size)
}

/// Choose the maps of a user namespace of `size` ids from `available`,
/// avoiding every extent in `used` (the (uid, gid) maps containers
/// record) and the
/// extra extents of `auto` (`getAutoUserNSIDMappings`).
pub fn allocate<'a>(
    size: u32,
    auto: &AutoUserNs,
    available: &Available,
    used: impl IntoIterator<Item = (&'a [IdMap], &'a [IdMap])>,
) -> Result<IdMappings, AutoUserNsError> {
    let (mut used_uids, mut used_gids) = (Vec::new(), Vec::new());
    for (uids, gids) in used {
        used_uids.extend(uids);
        used_gids.extend(gids);
    }
    let target = IdSet::span(0, u64::from(size));
    let pick = |kind: &'static str,
                used: Vec<&IdMap>,
                extra: &[IdMap],
                from: &IdSet,
                file: &PathBuf|
     -> Result<Vec<IdMap>, AutoUserNsError> {
        let in_use = IdSet::host_ids(used.into_iter().chain(extra));
        let wanted = target.subtract(&IdSet::container_ids(extra));
        let free = from.subtract(&in_use);
        let Some(hosts) = free.lowest(wanted.len()) else {
            return Err(AutoUserNsError::Exhausted(Box::new(Exhaustion {
                kind,
                needed: wanted.len(),
                in_use: from.intersect(&in_use),
                available: from.clone(),
                free,
                owner: available.owner.clone(),
                file: file.clone(),
                rootless: available.rootless,
            })));
        };
        let mut maps = hosts.zip(&wanted);
        maps.extend_from_slice(extra);
        Ok(maps)
    };
    Ok(IdMappings {
        uids: pick(
            "uid",
            used_uids,
            &auto.extra_uids,
            &available.uids,
            &available.subuid,
        )?,
        gids: pick(
            "gid",
            used_gids,
            &auto.extra_gids,
            &available.gids,
            &available.subgid,
        )?,
    })
}

#[cfg(test)]
mod tests;
