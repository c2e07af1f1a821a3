//! The marker `layerstore run` leaves in the containers it creates, and
//! whether the process it names still lives.
//!
//! A container record's `metadata` string is a JSON object; layerstore's
//! own containers carry the key `"layerstore-run"`:
//!
//! ```text
//! {"layerstore-run":{"pid":4242,"start-time":123456789}, ...}
//! ```
//!
//! `start-time` is field 22 of `/proc/<pid>/stat` (clock ticks since boot),
//! so a recycled pid is not mistaken for the original process. Other keys
//! (earlier versions wrote the runtime's path) are ignored: nothing in a
//! record ever names a program to run. The marker is written with the
//! container record, before anything is mounted. podman's containers never
//! carry the key; gc never touches them.

use std::fs;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::records::{Container, Layer};

/// The process that owns a container made by `layerstore run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOwner {
    /// Pid of the `layerstore run` process.
    pub pid: u32,
    /// Its start time: field 22 of `/proc/<pid>/stat`.
    #[serde(rename = "start-time")]
    pub start_time: u64,
}

impl RunOwner {
    /// The key of the marker in a container's metadata object.
    pub const METADATA_KEY: &'static str = "layerstore-run";

    /// The calling process.
    pub fn current() -> RunOwner {
        let pid = std::process::id();
        RunOwner {
            pid,
            start_time: start_time_of(pid).unwrap_or(0),
        }
    }

    /// The marker in a container's `metadata` string, if it has one.
    /// Anything else (podman's metadata, no JSON, a malformed marker) is
    /// `None`: not ours.
    pub fn from_metadata(metadata: &str) -> Option<RunOwner> {
        let value: Value = serde_json::from_str(metadata).ok()?;
        let marker = value.as_object()?.get(Self::METADATA_KEY)?;
        serde_json::from_value(marker.clone()).ok()
    }

    /// The marker's value, to be put under [`RunOwner::METADATA_KEY`] in a
    /// container's metadata object.
    pub fn to_metadata_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// A metadata string holding only the marker.
    pub fn to_metadata(&self) -> String {
        let mut object = serde_json::Map::new();
        object.insert(Self::METADATA_KEY.to_owned(), self.to_metadata_value());
        Value::Object(object).to_string()
    }

    /// Whether the process still runs: a process with this pid exists and
    /// started at this time.
    pub fn is_alive(&self) -> bool {
        self.pid != 0 && start_time_of(self.pid) == Some(self.start_time)
    }
}

/// The second marker of a container `layerstore run` made for podman (its
/// default mode): the storage container under a podman container that
/// `podman run --rootfs` runs on its mount.
///
/// ```text
/// {"layerstore-run":{...},"layerstore-podman":{"nocache":false,"container":"<podman id>"}}
/// ```
///
/// `container` is empty until podman made its container (the run notes it
/// after podman exits); until then podman's cidfile says it: the run's own
/// (`<runroot>/overlay-containers/<id>/userdata/podman.cid`), or the
/// caller's `--cidfile`, whose path `cidfile` holds. gc releases such a
/// storage container only when its run is gone and podman, asked, has no
/// container using it (see [`PodmanContainers`](super::PodmanContainers)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodmanUse {
    /// Mounted with on-disk owners where idmapped mounts are impossible.
    #[serde(default)]
    pub nocache: bool,
    /// The podman container's id, once known.
    #[serde(default)]
    pub container: String,
    /// The caller's `--cidfile` (absolute), if one was given: where podman
    /// writes its container's id when the run cannot note it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cidfile: String,
}

impl PodmanUse {
    /// The key of the marker in a container's metadata object.
    pub const METADATA_KEY: &'static str = "layerstore-podman";

    /// The marker in a container's `metadata` string, if it has one.
    pub fn from_metadata(metadata: &str) -> Option<PodmanUse> {
        let value: Value = serde_json::from_str(metadata).ok()?;
        let marker = value.as_object()?.get(Self::METADATA_KEY)?;
        serde_json::from_value(marker.clone()).ok()
    }

    /// `metadata` (a JSON object) with this marker in it.
    pub fn put_into(&self, metadata: &str) -> String {
        let mut value: Value = serde_json::from_str(metadata).unwrap_or(Value::Null);
        if !value.is_object() {
            value = Value::Object(serde_json::Map::new());
        }
        if let Some(object) = value.as_object_mut() {
            object.insert(
                Self::METADATA_KEY.to_owned(),
                serde_json::to_value(self).unwrap_or(Value::Null),
            );
        }
        value.to_string()
    }
}

/// The owner of container `c` if `layerstore run` made it, by every mark it
/// leaves: the run marker, layerstore's create mark
/// ([`crate::ops::CREATED_KEY`]) and, on its read-write layer (found in
/// `layers`), the container flag naming this container. Any of them
/// missing: not a run's container (podman's, or a record that lies), and
/// gc neither kills in it nor removes it. (Records can be forged like
/// anything on disk; what all three agree on is at least no accident.)
pub fn run_owner_of(c: &Container, layers: &[Layer]) -> Option<RunOwner> {
    let owner = RunOwner::from_metadata(&c.metadata)?;
    if !crate::ops::is_created_by_layerstore(c) {
        return None;
    }
    let layer = layers.iter().find(|l| l.id == c.layer)?;
    let flagged = layer
        .flags
        .get(crate::ops::FLAG_CONTAINER)
        .and_then(Value::as_str)
        == Some(c.id.as_str());
    flagged.then_some(owner)
}

/// Field 22 (`starttime`) of `/proc/<pid>/stat`, if the process exists.
pub fn start_time_of(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// `starttime` from the text of a `/proc/<pid>/stat` file. The command
/// name (field 2) may contain spaces and parentheses, so fields are counted
/// after its last `)`: field 3 is the first one there.
fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_foreign_metadata_is_not_ours() {
        let owner = RunOwner {
            pid: 42,
            start_time: 7,
        };
        let meta = owner.to_metadata();
        assert_eq!(meta, r#"{"layerstore-run":{"pid":42,"start-time":7}}"#);
        assert_eq!(RunOwner::from_metadata(&meta), Some(owner));
        let podman = r#"{"image-name":"x","image-id":"y","name":"c","created-at":1}"#;
        for other in [
            "",
            "not json",
            podman,
            r#"{"layerstore-run":{"pid":"x"}}"#,
            "[1]",
        ] {
            assert_eq!(RunOwner::from_metadata(other), None, "{other}");
        }
        // Other keys in the marker (an earlier version's runtime path) are
        // read past.
        let mixed = r#"{"name":"c","layerstore-run":{"pid":1,"start-time":2,"runtime":"/x/evil"}}"#;
        assert_eq!(
            RunOwner::from_metadata(mixed),
            Some(RunOwner {
                pid: 1,
                start_time: 2,
            })
        );
    }

    #[test]
    fn liveness_follows_pid_and_start_time() {
        let me = RunOwner::current();
        assert!(me.start_time > 0);
        assert!(me.is_alive());
        let recycled = RunOwner {
            start_time: me.start_time + 1,
            ..me.clone()
        };
        assert!(!recycled.is_alive());
        assert!(!RunOwner {
            pid: 0,
            start_time: 0,
        }
        .is_alive());
        assert!(!RunOwner {
            pid: u32::MAX - 1,
            start_time: 1,
        }
        .is_alive());
        let stat = "12 (a (b) c) S 1 12 12 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000";
        assert_eq!(parse_start_time(stat), Some(98765));
        assert_eq!(parse_start_time("garbage"), None);
    }
}
