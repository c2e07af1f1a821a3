//! The mapping decision: which layer a new container with a uid/gid mapping
//! is stacked on, and how that layer is presented to it.
//!
//! containers/storage (`store.go` `imageTopLayerForMapping`, spec §4.2) tries
//! the image's top layer and then every entry of the image's `mapped-layers`;
//! the first one whose recorded maps equal the request wins, and if none does
//! it makes a *template*: a full chowned copy of the top layer, kept forever.
//! Before v1.59 (and still rootless or with fuse-overlayfs) that happens for
//! every non-contiguous map. [`top_layer_for_mapping`] decides instead, in
//! this order:
//!
//! 1. `no_cache`: the top layer, always; mounted idmapped when the driver can
//!    shift these maps (ownership correct), plain otherwise (ownership as on
//!    disk, the accepted imperfect match). Never creates a layer.
//! 2. The driver can shift these maps (root, native overlay, the kernel
//!    mounts overlay on idmapped lowers; contiguous or not): the top layer,
//!    mounted idmapped.
//! 3. A layer already recorded for the image (top or mapped) whose maps equal
//!    the request the way containers/storage compares them: reuse it. The
//!    comparison is order-sensitive, and an empty (absent) map only equals an
//!    empty one; the request matches in the caller's order or in the host-id
//!    order v1.43 sorts maps into (and records them in) when its driver
//!    supports shifting, so a template podman made keeps serving.
//! 4. Otherwise a template made the containers/storage way, so podman can
//!    reuse it: the compatibility fallback, never taken for `no_cache`. When
//!    the template would come from a read-only store, containers/storage makes
//!    no shared template and copies into the container's own layer instead.
//!
//! Candidates whose parent layer is recorded but missing are skipped, as in
//! containers/storage.

use crate::idmap::{containers_storage_order, IdMap};
use crate::records::{Image, Layer};

/// The uid/gid mapping a container asks for. Empty maps mean the host
/// (identity) mapping, which is what containers/storage's nil maps and
/// `HostUIDMapping`/`HostGIDMapping` express.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappingRequest {
    /// The container's uid map, in the caller's order.
    pub uidmap: Vec<IdMap>,
    /// The container's gid map, in the caller's order.
    pub gidmap: Vec<IdMap>,
    /// Never copy: use the top layer even where it cannot be idmapped.
    pub no_cache: bool,
}

impl MappingRequest {
    /// Whether this is the host mapping (no maps at all).
    pub fn is_host(&self) -> bool {
        self.uidmap.is_empty() && self.gidmap.is_empty()
    }
}

/// What the driver and the store can do for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The driver presents layers to these maps without copying
    /// ([`Driver::supports_shifting`](crate::driver::Driver::supports_shifting)).
    pub shifting: bool,
    /// The image lives in the writable primary store, so a template may be
    /// recorded in its `mapped-layers`.
    pub image_writable: bool,
}

/// The layers of one store, as the decision sees them.
#[derive(Debug, Clone, Copy)]
pub struct LayerSource<'a> {
    /// Its layer records.
    pub layers: &'a [Layer],
    /// Whether it is the writable primary store (else an additional,
    /// read-only one).
    pub writable: bool,
}

/// How the chosen layer is presented to the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presentation {
    /// No mapping: mount as it is.
    Host,
    /// Mount with idmapped lower layers: files look owned by their container
    /// ids inside the user namespace.
    Idmapped,
    /// Mount as it is although the container has a mapping: files keep their
    /// on-disk owners (`no_cache` where idmapped mounts are impossible).
    OnDisk,
    /// The layer's files are already owned for these maps (a reused
    /// template): mount as it is.
    Owned,
}

/// The outcome of [`top_layer_for_mapping`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Stack the container on an existing layer (the image's top layer, or a
    /// mapped layer that matches), presented as given.
    Use {
        /// The layer id.
        layer: String,
        /// How it is mounted.
        presentation: Presentation,
    },
    /// Make a template the containers/storage way and record it in the
    /// image's `mapped-layers`; stack the container on it.
    CreateTemplate {
        /// The layer whose contents are copied (its record's maps say how
        /// its files are owned now).
        template: String,
        /// The template's parent, which becomes the new layer's parent.
        parent: Option<String>,
    },
    /// The only template lives in a read-only store: containers/storage
    /// stacks the container on it and chowns a copy into the container's own
    /// layer.
    CopyIntoContainerLayer {
        /// The layer the container is stacked on.
        template: String,
    },
}

/// Why no layer could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MappingError {
    /// The image has no top layer (an empty image).
    #[error("image {image} has no layers")]
    NoLayers {
        /// The image id.
        image: String,
    },
    /// Neither the top layer nor any mapped layer is usable.
    #[error("image {image}: top layer {top} is missing, or its parent is (and no mapped layer is usable)")]
    LayerUnknown {
        /// The image id.
        image: String,
        /// Its top layer id.
        top: String,
    },
}

/// Whether `layer`'s recorded maps equal the request the way
/// containers/storage's `layerMatchesMappingOptions` compares them
/// (`reflect.DeepEqual`, order-sensitive; absent ≠ present), accepting the
/// caller's order or v1.43's host-id order.
pub fn layer_matches(layer: &Layer, request: &MappingRequest) -> bool {
    if layer.uidmap == request.uidmap && layer.gidmap == request.gidmap {
        return true;
    }
    let (uids, gids) = containers_storage_order(&request.uidmap, &request.gidmap);
    layer.uidmap == uids && layer.gidmap == gids
}

/// Decide which layer a container of `image` with `request`'s maps is
/// stacked on; see the [module docs](self). `sources` lists the primary
/// store first, then read-only stores.
pub fn top_layer_for_mapping(
    image: &Image,
    sources: &[LayerSource<'_>],
    request: &MappingRequest,
    caps: Capabilities,
) -> Result<Decision, MappingError> {
    if image.top_layer.is_empty() {
        return Err(MappingError::NoLayers {
            image: image.id.clone(),
        });
    }
    let find = |id: &str| {
        sources.iter().find_map(|s| {
            s.layers
                .iter()
                .find(|l| l.id == id)
                .map(|l| (l, s.writable))
        })
    };
    let usable =
        |id: &str| find(id).filter(|(l, _)| l.parent.is_empty() || find(&l.parent).is_some());
    let unknown = || MappingError::LayerUnknown {
        image: image.id.clone(),
        top: image.top_layer.clone(),
    };
    if request.is_host() {
        return match usable(&image.top_layer) {
            Some(_) => Ok(Decision::Use {
                layer: image.top_layer.clone(),
                presentation: Presentation::Host,
            }),
            None => Err(unknown()),
        };
    }
    if request.no_cache || caps.shifting {
        let (top, _) = usable(&image.top_layer).ok_or_else(unknown)?;
        // An image whose top layer is itself recorded with maps (never made
        // by containers/storage, but possible) cannot be shifted as if its
        // files had container ids: fall through to the copy rules.
        if top.uidmap.is_empty() && top.gidmap.is_empty() {
            let presentation = if caps.shifting {
                Presentation::Idmapped
            } else {
                Presentation::OnDisk
            };
            return Ok(Decision::Use {
                layer: top.id.clone(),
                presentation,
            });
        }
        if layer_matches(top, request) {
            return Ok(Decision::Use {
                layer: top.id.clone(),
                presentation: Presentation::Owned,
            });
        }
        if request.no_cache {
            return Ok(Decision::Use {
                layer: top.id.clone(),
                presentation: Presentation::OnDisk,
            });
        }
    }
    // containers/storage's loop: stores in order, then candidates in order.
    let mut template: Option<(&Layer, bool)> = None;
    for (index, source) in sources.iter().enumerate() {
        let candidates = std::iter::once(&image.top_layer).chain(&image.mapped_layers);
        for id in candidates {
            let Some(layer) = source.layers.iter().find(|l| &l.id == id) else {
                continue;
            };
            if !layer.parent.is_empty() && find(&layer.parent).is_none() {
                continue;
            }
            if layer_matches(layer, request) {
                return Ok(Decision::Use {
                    layer: layer.id.clone(),
                    presentation: Presentation::Owned,
                });
            }
            if template.is_none() {
                template = Some((layer, index == 0 && source.writable));
            }
        }
    }
    let (template, in_primary) = template.ok_or_else(unknown)?;
    if in_primary && caps.image_writable {
        Ok(Decision::CreateTemplate {
            template: template.id.clone(),
            parent: (!template.parent.is_empty()).then(|| template.parent.clone()),
        })
    } else {
        Ok(Decision::CopyIntoContainerLayer {
            template: template.id.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
