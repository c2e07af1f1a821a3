//! Pure id translation for chown-by-maps: owners (Go `LChown`'s two steps),
//! single ids of ACL entries and v3 capability root ids, and the rewriting of
//! the `security.capability` and `system.posix_acl_*` xattr values.

use layerstore::idmap::{self, IdMappings};

/// Owners of one entry that `to_container` cannot map (and are not 0:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unmapped {
    /// The on-disk uid.
    pub uid: u32,
    /// The on-disk gid.
    pub gid: u32,
}

/// The maps of one chown-by-maps run, plus the overflow ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChownMaps {
    /// Maps that turn on-disk (host) ids into container ids; empty maps:
    /// identity (Go's nil `toContainer`).
    pub to_container: IdMappings,
    /// Maps that turn container ids into the new on-disk (host) ids; empty
    /// maps: identity.
    pub to_host: IdMappings,
    /// `(uid, gid)` given to container ids that `to_host` does not map (the
    /// kernel's `overflowuid`/`overflowgid`).
    pub overflow: (u32, u32),
}

impl ChownMaps {
    /// Maps with the kernel's overflow ids (`/proc/sys/kernel/overflow{uid,gid}`).
    pub fn new(to_container: IdMappings, to_host: IdMappings) -> Self {
        ChownMaps {
            to_container,
            to_host,
            overflow: (idmap::overflow_uid(), idmap::overflow_gid()),
        }
    }

    /// New owner of an entry owned by `(uid, gid)` on disk: both ids through
    /// `to_container` (if either fails, an error unless the pair is 0:0, which
    /// is kept), then through `to_host` with Go's `ToHostOverflow` (unmapped
    /// ids become the overflow ids; an id equal to the new root id is kept).
    pub(crate) fn owner(&self, uid: u32, gid: u32) -> Result<(u32, u32), Unmapped> {
        let tc = &self.to_container;
        let pair = match (
            idmap::to_container(uid, &tc.uids),
            idmap::to_container(gid, &tc.gids),
        ) {
            (Some(u), Some(g)) => (u, g),
            _ if uid == 0 && gid == 0 => (0, 0),
            _ => return Err(Unmapped { uid, gid }),
        };
        Ok(idmap::to_host_overflow(pair, &self.to_host, self.overflow))
    }

    /// A single uid (ACL user entry, capability root id), translated like an
    /// owner: `None` when `to_container` cannot map it and it is not 0.
    pub(crate) fn uid(&self, id: u32) -> Option<u32> {
        let c = idmap::to_container(id, &self.to_container.uids).or((id == 0).then_some(0))?;
        Some(idmap::to_host_overflow((c, 0), &self.to_host, self.overflow).0)
    }

    /// A single gid (ACL group entry), like [`uid`](Self::uid).
    pub(crate) fn gid(&self, id: u32) -> Option<u32> {
        let c = idmap::to_container(id, &self.to_container.gids).or((id == 0).then_some(0))?;
        Some(idmap::to_host_overflow((0, c), &self.to_host, self.overflow).1)
    }
}

/// Why an xattr value could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum XattrProblem {
    /// The value is not a valid encoding of its kind.
    Malformed,
    /// An id in it cannot be mapped by `to_container`.
    Unmapped {
        /// `"uid"` or `"gid"`.
        kind: &'static str,
        /// The on-disk id.
        id: u32,
    },
}

/// `VFS_CAP_REVISION_MASK` / `VFS_CAP_REVISION_3` of `<linux/capability.h>`.
const CAP_REVISION_MASK: u32 = 0xFF00_0000;
const CAP_REVISION_3: u32 = 0x0300_0000;
/// `sizeof(struct vfs_ns_cap_data)`: magic, 2 × (permitted, inheritable), rootid.
const CAP_V3_SIZE: usize = 24;

/// The `security.capability` value to write back after the chown: the same
/// bytes, with a v3 capability's `rootid` (the host uid of the namespace
/// root the capability is for) translated like an owner uid.
pub(crate) fn remap_capability(value: &[u8], maps: &ChownMaps) -> Result<Vec<u8>, XattrProblem> {
    let Some(magic) = value.get(..4) else {
        return Err(XattrProblem::Malformed);
    };
    let magic = u32::from_le_bytes(magic.try_into().expect("4 bytes"));
    if magic & CAP_REVISION_MASK != CAP_REVISION_3 {
        return Ok(value.to_vec());
    }
    if value.len() != CAP_V3_SIZE {
        return Err(XattrProblem::Malformed);
    }
    let rootid = u32::from_le_bytes(value[20..24].try_into().expect("4 bytes"));
    let mapped = maps.uid(rootid).ok_or(XattrProblem::Unmapped {
        kind: "uid",
        id: rootid,
    })?;
    let mut out = value.to_vec();
    out[20..24].copy_from_slice(&mapped.to_le_bytes());
    Ok(out)
}

/// `POSIX_ACL_XATTR_VERSION` and the entry tags that carry an id.
const ACL_VERSION: u32 = 2;
const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;
const ACL_HEADER: usize = 4;
const ACL_ENTRY: usize = 8;

/// A `system.posix_acl_access`/`_default` value (little-endian version 2
/// header, then 8-byte `tag, perm, id` entries) with the ids of `ACL_USER`
/// and `ACL_GROUP` entries translated like owners; `None` when nothing
/// changes.
pub(crate) fn remap_acl(value: &[u8], maps: &ChownMaps) -> Result<Option<Vec<u8>>, XattrProblem> {
    if value.len() < ACL_HEADER || (value.len() - ACL_HEADER) % ACL_ENTRY != 0 {
        return Err(XattrProblem::Malformed);
    }
    let version = u32::from_le_bytes(value[..4].try_into().expect("4 bytes"));
    if version != ACL_VERSION {
        return Err(XattrProblem::Malformed);
    }
    let mut out = value.to_vec();
    let mut changed = false;
    for entry in out[ACL_HEADER..].chunks_exact_mut(ACL_ENTRY) {
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        let id = u32::from_le_bytes(entry[4..8].try_into().expect("4 bytes"));
        let mapped = match tag {
            ACL_USER => maps
                .uid(id)
                .ok_or(XattrProblem::Unmapped { kind: "uid", id })?,
            ACL_GROUP => maps
                .gid(id)
                .ok_or(XattrProblem::Unmapped { kind: "gid", id })?,
            _ => continue,
        };
        if mapped != id {
            entry[4..8].copy_from_slice(&mapped.to_le_bytes());
            changed = true;
        }
    }
    Ok(changed.then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use layerstore::idmap::IdMappings;

    fn maps(tc: &str, th: &str) -> ChownMaps {
        let m = |s: &str| IdMappings::parse_same(s).unwrap();
        ChownMaps {
            to_container: m(tc),
            to_host: m(th),
            overflow: (65534, 65534),
        }
    }

    #[test]
    fn owners_follow_go_rules() {
        let noncontig = "0:200000:1000:1000:1000:1:1001:201001:64535";
        type Case = (
            &'static str,
            &'static str,
            (u32, u32),
            Result<(u32, u32), Unmapped>,
        );
        let table: &[Case] = &[
            // plain template -> non-contiguous map
            ("", noncontig, (0, 0), Ok((200000, 200000))),
            ("", noncontig, (1000, 1000), Ok((1000, 1000))),
            ("", noncontig, (1001, 5), Ok((201001, 200005))),
            // unmappable container ids become the overflow ids
            ("", "0:100000:1000", (5000, 0), Ok((65534, 100000))),
            // mapped template -> other map
            (
                "0:100000:65536",
                "0:300000:65536",
                (100007, 100000),
                Ok((300007, 300000)),
            ),
            // 0:0 tolerated, anything else unmappable is an error
            (
                "0:100000:65536",
                "0:300000:65536",
                (0, 0),
                Ok((300000, 300000)),
            ),
            (
                "0:100000:65536",
                "0:300000:65536",
                (0, 100000),
                Err(Unmapped {
                    uid: 0,
                    gid: 100000,
                }),
            ),
            // Go's quirk: an id equal to the new root id stays
            (
                "",
                "0:100000:65536:100000:5:1",
                (100000, 1),
                Ok((100000, 100001)),
            ),
        ];
        for (tc, th, input, want) in table {
            assert_eq!(
                maps(tc, th).owner(input.0, input.1),
                *want,
                "{tc} -> {th}: {input:?}"
            );
        }
    }

    fn cap_v3(rootid: u32) -> Vec<u8> {
        let mut v = CAP_REVISION_3.to_le_bytes().to_vec();
        v.extend_from_slice(&[0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        v.extend_from_slice(&rootid.to_le_bytes());
        v
    }

    #[test]
    fn capability_rootid_is_mapped() {
        let m = maps("0:100000:65536", "0:200000:65536");
        assert_eq!(remap_capability(&cap_v3(100000), &m), Ok(cap_v3(200000)));
        assert_eq!(remap_capability(&cap_v3(0), &m), Ok(cap_v3(200000)));
        assert_eq!(
            remap_capability(&cap_v3(7), &m),
            Err(XattrProblem::Unmapped { kind: "uid", id: 7 })
        );
        let v2 = [&0x0200_0001u32.to_le_bytes()[..], &[0u8; 16]].concat();
        assert_eq!(remap_capability(&v2, &m), Ok(v2.clone()));
        assert_eq!(remap_capability(&[1, 2], &m), Err(XattrProblem::Malformed));
        assert_eq!(
            remap_capability(&cap_v3(0)[..20], &m),
            Err(XattrProblem::Malformed)
        );
    }

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = ACL_VERSION.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    #[test]
    fn acl_user_and_group_entries_are_mapped() {
        let m = maps("", "0:200000:1000:1000:1000:1:1001:201001:64535");
        let u = u32::MAX;
        let before = acl(&[
            (1, 7, u),
            (2, 6, 1001),
            (2, 4, 1000),
            (4, 5, u),
            (8, 4, 42),
            (16, 7, u),
            (32, 5, u),
        ]);
        let after = acl(&[
            (1, 7, u),
            (2, 6, 201001),
            (2, 4, 1000),
            (4, 5, u),
            (8, 4, 200042),
            (16, 7, u),
            (32, 5, u),
        ]);
        assert_eq!(remap_acl(&before, &m), Ok(Some(after)));
        let plain = acl(&[(1, 7, u), (4, 5, u), (32, 5, u)]);
        assert_eq!(remap_acl(&plain, &m), Ok(None));
        assert_eq!(remap_acl(&before[..10], &m), Err(XattrProblem::Malformed));
        let strict = maps("0:100000:65536", "0:200000:65536");
        assert_eq!(
            remap_acl(&acl(&[(8, 4, 5)]), &strict),
            Err(XattrProblem::Unmapped { kind: "gid", id: 5 })
        );
    }
}
