use super::*;

fn m(container_id: u32, host_id: u32, size: u32) -> IdMap {
    IdMap {
        container_id,
        host_id,
        size,
    }
}

fn layer(id: &str, parent: &str, uidmap: Vec<IdMap>, gidmap: Vec<IdMap>) -> Layer {
    Layer {
        id: id.to_owned(),
        parent: parent.to_owned(),
        uidmap,
        gidmap,
        ..Layer::default()
    }
}

fn image(top: &str, mapped: &[&str]) -> Image {
    Image {
        id: "img".to_owned(),
        top_layer: top.to_owned(),
        mapped_layers: mapped.iter().map(|s| (*s).to_owned()).collect(),
        ..Image::default()
    }
}

/// A non-contiguous map, in the caller's order (not sorted by host id).
fn noncontig() -> (Vec<IdMap>, Vec<IdMap>) {
    (
        vec![m(0, 200000, 1000), m(1000, 1000, 1), m(1001, 201001, 64535)],
        vec![m(0, 200000, 65536)],
    )
}

fn request(maps: (Vec<IdMap>, Vec<IdMap>), no_cache: bool) -> MappingRequest {
    MappingRequest {
        uidmap: maps.0,
        gidmap: maps.1,
        no_cache,
    }
}

const SHIFT: Capabilities = Capabilities {
    shifting: true,
    image_writable: true,
};
const COPY: Capabilities = Capabilities {
    shifting: false,
    image_writable: true,
};

fn base_and_top() -> Vec<Layer> {
    vec![
        layer("base", "", vec![], vec![]),
        layer("top", "base", vec![], vec![]),
    ]
}

fn primary(layers: &[Layer]) -> Vec<LayerSource<'_>> {
    vec![LayerSource {
        layers,
        writable: true,
    }]
}

fn use_(layer: &str, presentation: Presentation) -> Decision {
    Decision::Use {
        layer: layer.to_owned(),
        presentation,
    }
}

#[test]
fn host_mapping_uses_the_top_layer() {
    let layers = base_and_top();
    for caps in [SHIFT, COPY] {
        let d = top_layer_for_mapping(
            &image("top", &[]),
            &primary(&layers),
            &MappingRequest::default(),
            caps,
        );
        assert_eq!(d, Ok(use_("top", Presentation::Host)));
    }
}

#[test]
fn the_four_outcomes() {
    let (u, g) = noncontig();
    let mut with_template = base_and_top();
    with_template.push(layer("tmpl", "base", u.clone(), g.clone()));
    let other = (vec![m(0, 300000, 65536)], vec![m(0, 300000, 65536)]);
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        &str,
        Vec<Layer>,
        &[&str],
        MappingRequest,
        Capabilities,
        Decision,
    )> = vec![
        (
            "no_cache without shifting: top layer as on disk, nothing made",
            base_and_top(),
            &[],
            request(noncontig(), true),
            COPY,
            use_("top", Presentation::OnDisk),
        ),
        (
            "no_cache with shifting: top layer idmapped",
            base_and_top(),
            &[],
            request(noncontig(), true),
            SHIFT,
            use_("top", Presentation::Idmapped),
        ),
        (
            "no_cache ignores a matching template",
            with_template.clone(),
            &["tmpl"],
            request(noncontig(), true),
            COPY,
            use_("top", Presentation::OnDisk),
        ),
        (
            "shifting, non-contiguous: top layer idmapped, template ignored",
            with_template.clone(),
            &["tmpl"],
            request(noncontig(), false),
            SHIFT,
            use_("top", Presentation::Idmapped),
        ),
        (
            "no shifting: a matching template is reused",
            with_template.clone(),
            &["tmpl"],
            request(noncontig(), false),
            COPY,
            use_("tmpl", Presentation::Owned),
        ),
        (
            "no shifting, no match: a new template from the top layer",
            with_template.clone(),
            &["tmpl"],
            request(other, false),
            COPY,
            Decision::CreateTemplate {
                template: "top".to_owned(),
                parent: Some("base".to_owned()),
            },
        ),
    ];
    for (what, layers, mapped, req, caps, want) in cases {
        let got = top_layer_for_mapping(&image("top", mapped), &primary(&layers), &req, caps);
        assert_eq!(got, Ok(want), "{what}");
    }
}

#[test]
fn maps_compare_like_containers_storage() {
    let (u, g) = noncontig();
    let (sorted_u, sorted_g) = containers_storage_order(&u, &g);
    assert_ne!(sorted_u, u, "the fixture must be out of host-id order");
    // A template recorded in v1.43's host-id order (its driver could shift)
    // serves the request given in the caller's order, and the other way round.
    for recorded in [(u.clone(), g.clone()), (sorted_u.clone(), sorted_g.clone())] {
        let mut layers = base_and_top();
        layers.push(layer("tmpl", "base", recorded.0, recorded.1));
        let got = top_layer_for_mapping(
            &image("top", &["tmpl"]),
            &primary(&layers),
            &request(noncontig(), false),
            COPY,
        );
        assert_eq!(got, Ok(use_("tmpl", Presentation::Owned)));
    }
    // Any other order is a different map to containers/storage.
    let mut shuffled = u.clone();
    shuffled.rotate_left(1);
    assert_ne!(shuffled, sorted_u);
    let l = layer("t", "", shuffled, g.clone());
    assert!(!layer_matches(&l, &request(noncontig(), false)));
    // Absent maps only equal absent maps: a uid-only template is not a
    // template for uid+gid, nor the host layer for a mapped request.
    let uid_only = layer("t", "", u.clone(), vec![]);
    assert!(!layer_matches(&uid_only, &request(noncontig(), false)));
    assert!(layer_matches(
        &uid_only,
        &request((u.clone(), vec![]), false)
    ));
    assert!(!layer_matches(
        &layer("t", "", vec![], vec![]),
        &request(noncontig(), false)
    ));
}

#[test]
fn missing_layers_and_parents_are_skipped() {
    let (u, g) = noncontig();
    // The top layer's parent is gone: the top layer is no candidate, but a
    // template whose parent exists still serves.
    let layers = vec![
        layer("top", "gone", vec![], vec![]),
        layer("base2", "", vec![], vec![]),
        layer("tmpl", "base2", u.clone(), g.clone()),
    ];
    let got = top_layer_for_mapping(
        &image("top", &["tmpl"]),
        &primary(&layers),
        &request(noncontig(), false),
        COPY,
    );
    assert_eq!(got, Ok(use_("tmpl", Presentation::Owned)));
    // ... and with shifting or no_cache the top layer is needed: an error.
    for (req, caps) in [
        (request(noncontig(), true), COPY),
        (request(noncontig(), false), SHIFT),
    ] {
        let got = top_layer_for_mapping(&image("top", &["tmpl"]), &primary(&layers), &req, caps);
        assert!(
            matches!(got, Err(MappingError::LayerUnknown { .. })),
            "{got:?}"
        );
    }
    // Nothing usable at all.
    let got = top_layer_for_mapping(
        &image("nope", &[]),
        &primary(&layers),
        &request(noncontig(), false),
        COPY,
    );
    assert!(matches!(got, Err(MappingError::LayerUnknown { .. })));
    let got = top_layer_for_mapping(
        &image("", &[]),
        &primary(&layers),
        &request(noncontig(), false),
        COPY,
    );
    assert!(matches!(got, Err(MappingError::NoLayers { .. })));
    // The host mapping needs the top layer too.
    let got = top_layer_for_mapping(
        &image("top", &[]),
        &primary(&layers),
        &MappingRequest::default(),
        COPY,
    );
    assert!(matches!(got, Err(MappingError::LayerUnknown { .. })));
}

#[test]
fn read_only_stores() {
    let ro_layers = base_and_top();
    let rw_layers: Vec<Layer> = Vec::new();
    let sources = [
        LayerSource {
            layers: &rw_layers,
            writable: true,
        },
        LayerSource {
            layers: &ro_layers,
            writable: false,
        },
    ];
    // The image's layers are in a read-only store: no shared template, the
    // container layer gets its own copy (containers/storage's rule).
    let got = top_layer_for_mapping(
        &image("top", &[]),
        &sources,
        &request(noncontig(), false),
        COPY,
    );
    assert_eq!(
        got,
        Ok(Decision::CopyIntoContainerLayer {
            template: "top".to_owned()
        })
    );
    // With shifting, the read-only top layer serves directly.
    let got = top_layer_for_mapping(
        &image("top", &[]),
        &sources,
        &request(noncontig(), false),
        SHIFT,
    );
    assert_eq!(got, Ok(use_("top", Presentation::Idmapped)));
    // An image recorded in a read-only image store cannot get mapped-layers.
    let layers = base_and_top();
    let caps = Capabilities {
        shifting: false,
        image_writable: false,
    };
    let got = top_layer_for_mapping(
        &image("top", &[]),
        &primary(&layers),
        &request(noncontig(), false),
        caps,
    );
    assert_eq!(
        got,
        Ok(Decision::CopyIntoContainerLayer {
            template: "top".to_owned()
        })
    );
}

#[test]
fn host_ownership_template_for_a_mapped_top_layer() {
    // A top layer recorded with maps is matched, not shifted.
    let (u, g) = noncontig();
    let layers = vec![layer("top", "", u.clone(), g.clone())];
    let got = top_layer_for_mapping(
        &image("top", &[]),
        &primary(&layers),
        &request(noncontig(), false),
        SHIFT,
    );
    assert_eq!(got, Ok(use_("top", Presentation::Owned)));
    let other = (vec![m(0, 1, 5)], vec![m(0, 1, 5)]);
    let got = top_layer_for_mapping(
        &image("top", &[]),
        &primary(&layers),
        &request(other.clone(), true),
        SHIFT,
    );
    assert_eq!(got, Ok(use_("top", Presentation::OnDisk)));
    let got = top_layer_for_mapping(
        &image("top", &[]),
        &primary(&layers),
        &request(other, false),
        SHIFT,
    );
    assert_eq!(
        got,
        Ok(Decision::CreateTemplate {
            template: "top".to_owned(),
            parent: None
        })
    );
}
