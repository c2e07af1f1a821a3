//! Validated record ids: the one boundary a string read from a record (or
//! given by a caller) passes before it may name anything on disk.
//!
//! ```text
//! <graphroot>/overlay/<LayerId>/               <graphroot>/overlay-layers/<LayerId>.tar-split.gz
//! <graphroot>/overlay-layers/<LayerId>/        <graphroot>/overlay-images/<ImageId>/
//! <graphroot>/overlay-containers/<ContainerId>/  <runroot>/overlay-containers/<ContainerId>/
//! ```
//!
//! containers/storage makes ids of 64 lowercase hex digits and accepts a
//! caller's id verbatim; a record on disk may hold anything. An id here is
//! a single, unambiguous file name in every directory it is joined to:
//!
//! - not empty, at most [`MAX_ID_LEN`] bytes (room for `.tar-split.gz`);
//! - no `/`, no NUL, no control character;
//! - not `.` or `..`, and not starting with `.` (dotfiles are the store's
//!   own: `.has-mount-program`, `.tmp-*` files of atomic writes);
//! - no `:`, `,` or `\` (separators of `lower` / `lower-layers` files and
//!   of overlay mount options);
//! - not a name the store uses for something else in those directories
//!   (`l`, `staging`, `tempdirs`, `tmp`, `backingFsBlockDev`, `userdata`),
//!   and not ending in `.json`, `.lock` or `.tar-split.gz`.
//!
//! Names (`names` of records) are free text and never become paths.
//!
//! The path helpers of the store and the driver take these types, so a raw
//! record string cannot reach a path join or a removal: the compiler, not
//! review, keeps hostile ids out.

use std::borrow::Borrow;
use std::fmt;

use serde::Serialize;

/// The longest id accepted: 255 (NAME_MAX) minus `.tar-split.gz`.
pub const MAX_ID_LEN: usize = 255 - ".tar-split.gz".len();

/// Names in the store's directories that are not records.
const RESERVED: [&str; 6] = [
    "l",
    "staging",
    "tempdirs",
    "tmp",
    "backingFsBlockDev",
    "userdata",
];

/// Suffixes of the store's own files in the directories ids are joined to.
const RESERVED_SUFFIXES: [&str; 3] = [".json", ".lock", ".tar-split.gz"];

/// An id that cannot name a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {id:?}: {reason}")]
pub struct InvalidId {
    /// "layer", "image", "container".
    pub kind: &'static str,
    /// The id as found.
    pub id: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Why `id` cannot be a record id, if it cannot.
pub fn id_problem(id: &str) -> Option<&'static str> {
    // The ids containers/storage makes (64 lowercase hex digits) break no
    // rule below: checked in one pass, as most ids of a large store are.
    if id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    if id.is_empty() {
        Some("it is empty")
    } else if id.len() > MAX_ID_LEN {
        Some("it is longer than 242 bytes")
    } else if id.contains('/') {
        Some("it contains '/'")
    } else if id.starts_with('.') {
        Some("it starts with '.' (it is '.', '..' or a dotfile name)")
    } else if id.contains([':', ',', '\\']) {
        Some("it contains ':', ',' or '\\' (separators in lower files and mount options)")
    } else if id.chars().any(char::is_control) {
        Some("it contains NUL or another control character")
    } else if RESERVED.contains(&id) {
        Some("it is the name of one of the store's own directories")
    } else if RESERVED_SUFFIXES.iter().any(|s| id.ends_with(s)) {
        Some("it ends like one of the store's own files (.json, .lock, .tar-split.gz)")
    } else {
        None
    }
}

macro_rules! record_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// What the records are called in messages.
            pub const KIND: &'static str = $kind;

            /// Check `id` (see the [module docs](self)).
            pub fn parse(id: &str) -> Result<Self, InvalidId> {
                match id_problem(id) {
                    None => Ok(Self(id.to_owned())),
                    Some(reason) => Err(InvalidId {
                        kind: $kind,
                        id: id.to_owned(),
                        reason,
                    }),
                }
            }

            /// A new random id as containers/storage makes them (64 hex
            /// digits).
            pub fn random() -> Self {
                Self(crate::ops::random_id())
            }

            /// The id.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::parse(s)
            }
        }
    };
}

record_id!(
    /// The id of a layer record (and of its directories).
    LayerId,
    "layer"
);
record_id!(
    /// The id of an image record (and of its big-data directory).
    ImageId,
    "image"
);
record_id!(
    /// The id of a container record (and of its directories).
    ContainerId,
    "container"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_storage_ids_pass() {
        let hex = "a1a819d9f0ad5d2d0c0d2e1a5b0a7e0a4a7d4d8d6b2a3c1e0f9e8d7c6b5a4938";
        assert_eq!(LayerId::parse(hex).unwrap().as_str(), hex);
        assert!(LayerId::parse("my-layer_1.v2").is_ok());
        assert!(ContainerId::parse("café").is_ok());
        let random = LayerId::random();
        assert_eq!(random.as_str().len(), 64);
    }

    #[test]
    fn hostile_ids_are_refused_with_a_reason() {
        for bad in [
            "",
            ".",
            "..",
            "../../x",
            "/etc",
            "a/b",
            ".hidden",
            ".has-mount-program",
            "a\0b",
            "a\nb",
            "a:b",
            "a,b",
            "a\\b",
            "l",
            "tmp",
            "staging",
            "layers.json",
            "images.lock",
            "x.tar-split.gz",
            &"x".repeat(MAX_ID_LEN + 1),
        ] {
            let err = LayerId::parse(bad).unwrap_err();
            assert_eq!(err.kind, "layer");
            assert_eq!(err.id, bad);
            assert!(!err.reason.is_empty());
            assert!(ImageId::parse(bad).is_err(), "{bad:?}");
            assert!(ContainerId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(LayerId::parse(&"x".repeat(MAX_ID_LEN)).is_ok());
        let msg = ImageId::parse("../x").unwrap_err().to_string();
        assert_eq!(msg, "invalid image id \"../x\": it contains '/'");
    }

    #[test]
    fn ids_compare_with_strings_and_serialize_bare() {
        let id = LayerId::parse("abc").unwrap();
        assert!(id == "abc");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"abc\"");
        let set: std::collections::HashSet<LayerId> = [id.clone()].into();
        assert!(set.contains("abc"));
    }
}
